"""Change detection: which variables differ from the version the notebook last saved or loaded.

This is what lets ``%state save`` skip re-encoding unchanged values and
``%state auto on`` save after each cell only what the cell changed, cheaply
enough that a notebook holding a 100 MB DataFrame does not feel it.

How it works
------------
A :class:`Baseline` says "the namespace matched version N of this entity for
these names". For each name it keeps an :class:`Entry`: the object itself
(held, so its ``id`` cannot be reused by a new object) and a mark of its content:

- **DataFrame / Series**: a :class:`statekit.changemark.Mark`: the frame's
  structure (blocks, axes, names, attrs, flags) and a proof that its memory was
  not written since: sealed (read-only at the numpy level while tracked, so
  checking costs microseconds whatever the size) or, when something outside
  pandas may reach that memory, a sha256 of it. When the mark differs, the frame
  is compared with the mark's shallow copy (``equals``: vectorised, about 10 ms
  per 100 MB), provided that copy is intact, so that rewriting the same values,
  or a consolidation pandas did on its own, is not a change. A frame that cannot
  be marked is tracked like any other value.
- **ndarray**: a sha256 of its bytes (no copy when it is contiguous).
- **anything else**: a sha256 of its pickle (C speed; the pickle is not kept).
  Values that cannot be pickled are tracked by identity only.

After each cell the tracker checks every data variable:

- not in the baseline: new; in the baseline but gone from the namespace: deleted;
- bound to another object than the baseline's: compare contents (frames with
  ``equals``, others by digest), so ``df = df.copy()`` is not a change;
- the same object: frames by their mark (always); other values by digest only
  when the cell's text mentions the name (a superset of what ``ast`` would find,
  and it sees names inside magics such as ``%time x.append(1)``), or a function
  the cell mentions refers to it (read from the function's code object), or an
  earlier failed cell mentioned it, or the value is small (up to 64 kB).

Costs (2-core machine, SQLite; the hook timed around IPython's post_run_cell
with a 104 MB DataFrame and a 104 MB ndarray in the namespace): a cell that
does not mention them and changes nothing, 0.04 ms, with no database round
trip (one sealed frame check: about 0.1 ms per 100 MB frame, measured with
``timeit`` of :func:`check`; a frame whose memory is shared with an array you
hold is hashed instead, about 0.2-0.3 s per 100 MB per cell); a cell that reads the frame (``big["c0"].mean()``), 0.15 ms, because
reads never replace blocks; a cell that mentions the ndarray, one sha256 of it
(64 ms); a cell that writes one value into the frame makes pandas copy the
written block once (about 12 ms per 100 MB), then costs the save itself
(about 0.3 s: the store encodes the whole frame again and writes the one
changed chunk). The shallow copies keep, until the next save or load, the
blocks of a frame as they were when last saved: a frame changed in place
without auto-checkpoint holds up to twice its memory until the next save.
Without auto-checkpoint, the baseline lets go of deleted and rebound
variables after each cell (:func:`prune`), so ``del df`` frees its memory.

A variable bound to the same object as one whose content changed is changed too;
a new name bound to an object another name holds (``b = a``, a loop variable) is
new, and the other name is saved again only if that object's content changed.

Limits: an in-place change to a large value that is neither a frame nor small,
made through code the cell's text does not name (a method of some other
object, a container holding it) is not seen until a cell mentions it; an
explicit ``%state save`` looks inside every value and always sees it.
"""

from __future__ import annotations

import ast
import hashlib
import pickle
import re
import types
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .. import changemark

SMALL = 64 * 1024
"""Values up to this size (bytes) are re-checked after every cell, whatever the cell mentions."""

_TOKEN = re.compile(r"[^\W\d]\w*")


@dataclass
class Entry:
    """One variable as of the baseline: the object, how to recognise its content, its rough size."""

    obj: Any
    kind: str  # "frame", "array", "value", "opaque" (identity only) or "stale" (rebound: changed)
    mark: Any
    ref: Any = None  # frames: the zero-copy shallow copy that makes pandas copy on write
    size: int = 0


@dataclass
class Baseline:
    """The namespace matched ``version`` of ``entity`` for the names in ``entries``.

    ``gone`` holds names deleted since, whose entries were let go (see :func:`prune`).
    """

    entity: str | None = None
    version: int | None = None
    entries: dict[str, Entry] = field(default_factory=dict)
    gone: set[str] = field(default_factory=set)

    def matches(self, entity: str, head_version: int | None) -> bool:
        return self.entity == entity and self.version is not None and self.version == head_version


# ---------------------------------------------------------------- marks


def frames_equal(cur: Any, ref: Any) -> bool:
    """Same type, dtypes, axes (values, dtypes, names) and values: what the store would encode alike."""
    try:
        if type(cur) is not type(ref) or cur.shape != ref.shape:
            return False
        for a, b in zip(cur.axes, ref.axes, strict=True):
            if type(a) is not type(b) or not _same_dtype(a.dtype, b.dtype) or list(a.names) != list(b.names) \
                    or not a.equals(b):
                return False
        if isinstance(cur, pd.Series):
            if not _same_dtype(cur.dtype, ref.dtype) or not bool(cur.name == ref.name):
                return False
        elif not all(_same_dtype(a, b) for a, b in zip(cur.dtypes, ref.dtypes, strict=True)):
            return False
        if cur.flags.allows_duplicate_labels != ref.flags.allows_duplicate_labels or not _same_attrs(cur, ref):
            return False
        return bool(cur.equals(ref))
    except Exception:  # noqa: BLE001 - anything odd counts as changed
        return False


def _same_dtype(a: Any, b: Any) -> bool:
    """Equal dtypes as the store encodes them: unordered categoricals equal, whatever their order, are not."""
    if a != b:
        return False
    if isinstance(a, pd.CategoricalDtype):
        return a.ordered == b.ordered and a.categories.dtype == b.categories.dtype and a.categories.equals(b.categories)
    return True


def _same_attrs(cur: Any, ref: Any) -> bool:
    if not cur.attrs and not ref.attrs:
        return True
    return pickle.dumps(cur.attrs, protocol=5) == pickle.dumps(ref.attrs, protocol=5)


def array_digest(arr: np.ndarray) -> str:
    return changemark.digest(arr)


def make_entry(value: Any) -> Entry:
    """Record ``value`` as it is now."""
    if isinstance(value, (pd.DataFrame, pd.Series)):
        mark = changemark.take(value)
        if mark is not None:
            return Entry(value, "frame", mark, mark.guard, 0)
    if type(value) is np.ndarray and not value.dtype.hasobject:
        return Entry(value, "array", array_digest(value), None, int(value.nbytes))
    try:
        data = pickle.dumps(value, protocol=5)
    except Exception:  # noqa: BLE001 - unpicklable: identity is all we can track
        return Entry(value, "opaque", None, None, 0)
    return Entry(value, "value", hashlib.sha256(data).hexdigest(), None, len(data))


def prune(baseline: Baseline, user_ns: Mapping[str, Any]) -> None:
    """Let go of the objects of names deleted or rebound since the baseline, so that memory
    the user frees (``del df``) is freed. Run after each cell when auto-checkpoint is off;
    a rebound name is then simply "changed" (its old value is no longer there to compare)."""
    for name, entry in list(baseline.entries.items()):
        if name not in user_ns:
            del baseline.entries[name]
            baseline.gone.add(name)
        elif entry.kind != "stale" and user_ns[name] is not entry.obj:
            baseline.entries[name] = Entry(None, "stale", None)


def check(entry: Entry | None, value: Any, look_inside: bool) -> tuple[bool, Entry | None]:
    """(changed, a fresh entry when one was computed and the baseline should take it)."""
    if entry is None or entry.kind == "stale":
        return True, None
    if entry.kind == "frame":
        if not isinstance(value, (pd.DataFrame, pd.Series)):
            return True, None
        if value is entry.obj and entry.mark.unchanged(value):
            return False, None
        if entry.mark.intact() and frames_equal(value, entry.ref):
            return False, make_entry(value)
        return True, None
    if value is entry.obj and (entry.kind == "opaque" or (not look_inside and entry.size > SMALL)):
        return False, None
    fresh = make_entry(value)
    if fresh.kind == "opaque" or fresh.kind != entry.kind:
        return True, None
    return fresh.mark != entry.mark, fresh


def aliases_changed(unchanged: Mapping[str, Any], saved: Mapping[str, Any], baseline: Baseline) -> list[str]:
    """The names in ``unchanged`` to save after all: bound to the same object as a saved name,
    and that object's content changed. A saved name that is the same object as its baseline
    changed in place; a new or rebound name proves nothing, so the other name is looked into."""
    entries = baseline.entries
    in_place = {id(v) for n, v in saved.items() if (e := entries.get(n)) is not None and e.obj is v}
    saved_ids = {id(v) for v in saved.values()}
    found = []
    for n, v in unchanged.items():
        if id(v) in in_place or (id(v) in saved_ids and check(entries.get(n), v, True)[0]):
            found.append(n)
    return found


# ---------------------------------------------------------------- what a cell touches


def mentioned_names(source: str, user_ns: Mapping[str, Any]) -> set[str]:
    """Names in the cell's text that are bound in the namespace, plus the globals used by the
    functions (and classes' methods) it mentions, followed through the functions those use."""
    found: set[str] = set()
    todo = [t for t in set(_TOKEN.findall(source)) if t in user_ns]
    seen_code: set[int] = set()
    while todo:
        name = todo.pop()
        if name in found:
            continue
        found.add(name)
        for code in _code_objects(user_ns.get(name)):
            if id(code) in seen_code:
                continue
            seen_code.add(id(code))
            todo.extend(n for n in _code_names(code) if n in user_ns and n not in found)
    return found


def _code_objects(value: Any) -> Iterable[types.CodeType]:
    if isinstance(value, types.FunctionType):
        yield value.__code__
    elif isinstance(value, types.MethodType) and isinstance(value.__func__, types.FunctionType):
        yield value.__func__.__code__
    elif isinstance(value, type) and value.__module__ == "__main__":
        for attr in vars(value).values():
            fn = attr.__func__ if isinstance(attr, (staticmethod, classmethod)) else attr
            if isinstance(fn, types.FunctionType):
                yield fn.__code__


def _code_names(code: types.CodeType) -> Iterable[str]:
    yield from code.co_names
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _code_names(const)


def assigned_names(source: str) -> tuple[set[str], set[str]]:
    """(names the cell binds or modifies through a target, names it deletes), at module level.

    ``x = ...``, ``x += ...``, ``x[i] = ...``, ``x.a = ...``, ``for x in``, ``with ... as x``,
    imports, ``except ... as x``, walrus and match captures bind or modify ``x``;
    ``del x`` deletes it (``del x[i]`` modifies it). Function and class bodies are
    not the module's scope and are not looked into.
    """
    visitor = _Assignments()
    visitor.visit(ast.parse(source))
    return visitor.assigned - visitor.deleted, visitor.deleted


class _Assignments(ast.NodeVisitor):
    def __init__(self) -> None:
        self.assigned: set[str] = set()
        self.deleted: set[str] = set()

    def _target(self, node: ast.AST, deleting: bool) -> None:
        if isinstance(node, ast.Name):
            if deleting:
                self.deleted.add(node.id)
            else:
                self.assigned.add(node.id)
                self.deleted.discard(node.id)
            return
        if isinstance(node, (ast.Tuple, ast.List)):
            for elt in node.elts:
                self._target(elt, deleting)
            return
        if isinstance(node, ast.Starred):
            self._target(node.value, deleting)
            return
        base = node
        while isinstance(base, (ast.Attribute, ast.Subscript)):
            base = base.value
        if isinstance(base, ast.Name):  # x[i] = ..., x.a = ..., del x[i]: x is modified
            self.assigned.add(base.id)

    def visit_Assign(self, node: ast.Assign) -> None:
        self.visit(node.value)
        for t in node.targets:
            self._target(t, False)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        self.visit(node.value)
        self._target(node.target, False)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if node.value is not None:
            self.visit(node.value)
            self._target(node.target, False)

    def visit_Delete(self, node: ast.Delete) -> None:
        for t in node.targets:
            self._target(t, True)

    def visit_For(self, node: ast.For | ast.AsyncFor) -> None:
        self.visit(node.iter)
        self._target(node.target, False)
        for stmt in [*node.body, *node.orelse]:
            self.visit(stmt)

    visit_AsyncFor = visit_For

    def visit_withitem(self, node: ast.withitem) -> None:
        self.visit(node.context_expr)
        if node.optional_vars is not None:
            self._target(node.optional_vars, False)

    def visit_NamedExpr(self, node: ast.NamedExpr) -> None:
        self.visit(node.value)
        self._target(node.target, False)

    def visit_Import(self, node: ast.Import | ast.ImportFrom) -> None:
        for alias in node.names:
            if alias.name != "*":
                self.assigned.add(alias.asname or alias.name.split(".")[0])

    visit_ImportFrom = visit_Import

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        if node.name:
            self.assigned.add(node.name)
        self.generic_visit(node)

    def visit_MatchAs(self, node: ast.MatchAs) -> None:
        if node.name:
            self.assigned.add(node.name)
        self.generic_visit(node)

    def visit_MatchStar(self, node: ast.MatchStar) -> None:
        if node.name:
            self.assigned.add(node.name)

    def visit_MatchMapping(self, node: ast.MatchMapping) -> None:
        if node.rest:
            self.assigned.add(node.rest)
        self.generic_visit(node)

    def _definition(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> None:
        self.assigned.add(node.name)  # its body is another scope

    visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = _definition

    def visit_Lambda(self, node: ast.Lambda) -> None:
        return None

    def _comprehension(self, node: ast.AST) -> None:
        for child in ast.walk(node):  # only a walrus leaks out of a comprehension
            if isinstance(child, ast.NamedExpr):
                self._target(child.target, False)

    visit_ListComp = visit_SetComp = visit_DictComp = visit_GeneratorExp = _comprehension
