"""Three-way merge of one branch into another, from their common ancestor.

The history is a graph: each version has its parent, and a merge version has a second parent, the
head of the branch merged in (recorded in its metadata under ``merged_from``, which the checksum
covers and backups keep, and in the ``merge`` transition). The merge base is the newest common
ancestor of the two heads in that graph, so merging a branch twice only brings what is new.

Per name: equal on both sides, or changed on one side only (compared as stored, no payload read):
that side's value is taken by reference, no bytes copied. Changed on both: dicts merge key path by
key path; DataFrames with the same columns and dtypes on all three sides merge row by index label
and cell by cell (rows added on either side are appended, cells changed on one side taken from it);
anything else changed differently on both sides is a conflict. Conflicts raise MergeConflictError
with a DataFrame (name, item, base, ours, theirs) and nothing is written; ``resolve={key: "ours" |
"theirs"}``, keyed by a name or an item, settles them. A change of columns or dtypes on a side is a
conflict of the whole frame.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from . import changes, codecs, validate
from .diff import _equal, _path, summarize
from .errors import ConflictError, InvalidArgumentError, MergeConflictError, NotFoundError
from .models import SnapshotStatus, TransitionType
from .rows import SnapshotRow

if TYPE_CHECKING:
    from .snapshot import StateSnapshot
    from .store import StateManager

CONFLICT_COLUMNS = ["name", "item", "base", "ours", "theirs"]
M: Any = object()  # missing
Choose = Callable[[str, str], "str | None"]


# ------------------------------------------------------------------ the graph


def graph(sm: StateManager, cur: Any, entity_id: str) -> dict[str, tuple[int, tuple[str, ...]]]:
    """snapshot id -> (version, parent ids): the first parent, and a merge's second parent."""
    db = sm.db
    meta = "metadata" if db.is_sqlite else "metadata::text"
    cur.execute(db.sql(f"SELECT snapshot_id, version, parent_snapshot_id, kind, {meta} FROM state_snapshots "
                       "WHERE entity_id = :e"), {"e": entity_id})
    out: dict[str, tuple[int, tuple[str, ...]]] = {}
    for sid, version, parent, kind, metadata in cur.fetchall():
        parents = [parent] if parent else []
        if kind == TransitionType.MERGE.value:
            second = second_parent(metadata)
            if second:
                parents.append(second)
        out[sid] = (int(version), tuple(parents))
    return out


def second_parent(metadata: Any) -> str | None:
    try:
        meta = json.loads(metadata) if isinstance(metadata, str) else metadata
        sid = meta["merged_from"]["snapshot_id"]
    except (ValueError, TypeError, KeyError):
        return None
    return sid if isinstance(sid, str) else None


def ancestors(g: Mapping[str, tuple[int, tuple[str, ...]]], start: str) -> set[str]:
    """``start`` and every version it descends from (through both parents of merges)."""
    seen: set[str] = set()
    todo = [start]
    while todo:
        sid = todo.pop()
        if sid in seen or sid not in g:
            continue
        seen.add(sid)
        todo.extend(g[sid][1])
    return seen


def merge_base(g: Mapping[str, tuple[int, tuple[str, ...]]], a: str, b: str) -> str | None:
    """The newest common ancestor of ``a`` and ``b`` (an ancestor has a smaller version than its descendants)."""
    common = ancestors(g, a) & ancestors(g, b)
    return max(common, key=lambda s: g[s][0]) if common else None


# ------------------------------------------------------------------ comparing and merging values


def _stored(row: SnapshotRow | None, name: str) -> Any:
    if row is None:
        return M
    if name in row.state_data:
        return ("inline", changes._canon(row.state_data[name]))
    if name in row.items:
        return ("chunks", changes._canon(changes._strip(row.items[name])))
    return M


def _same(a: Any, b: Any) -> bool:
    if a is M or b is M:
        return a is b
    if codecs.is_plain_json(a) and codecs.is_plain_json(b):
        try:
            return changes._canon(a) == changes._canon(b)
        except ValueError:  # NaN: not JSON text
            pass
    return _equal(a, b)


def _show(v: Any) -> Any:
    return None if v is M else summarize(v)


class _Merger:
    def __init__(self, choose: Choose):
        self.choose = choose
        self.conflicts: list[dict[str, Any]] = []

    def decide(self, name: str, item: str, b: Any, o: Any, t: Any) -> str | None:
        """The side ``resolve`` picks for this conflict; None (and the conflict recorded) when it picks none."""
        side = self.choose(name, item)
        if side is None:
            self.conflicts.append({"name": name, "item": item, "base": _show(b), "ours": _show(o),
                                   "theirs": _show(t)})
        return side

    def conflict(self, name: str, item: str, b: Any, o: Any, t: Any) -> Any:
        return t if self.decide(name, item, b, o, t) == "theirs" else o

    def value(self, name: str, path: str, b: Any, o: Any, t: Any) -> Any:
        if _same(o, t):
            return o
        if _same(b, o):
            return t
        if _same(b, t):
            return o
        if type(o) is dict and type(t) is dict:
            return self.dict(name, path, b if type(b) is dict else {}, o, t)
        if isinstance(o, pd.DataFrame) and isinstance(t, pd.DataFrame) and isinstance(b, pd.DataFrame):
            mark = len(self.conflicts)
            try:
                return self.frame(name, b, o, t)
            except (TypeError, ValueError, KeyError):  # a cell pandas cannot set (a new category...): whole frame
                del self.conflicts[mark:]
                return self.conflict(name, name, b, o, t)
        return self.conflict(name, path, b, o, t)

    def dict(self, name: str, prefix: str, b: dict[Any, Any], o: dict[Any, Any], t: dict[Any, Any]) -> dict[Any, Any]:
        out = {}
        for key in dict.fromkeys([*o, *t]):
            v = self.value(name, _path(prefix, key), b.get(key, M), o.get(key, M), t.get(key, M))
            if v is not M:
                out[key] = v
        return out

    def frame(self, name: str, b: pd.DataFrame, o: pd.DataFrame, t: pd.DataFrame) -> Any:
        shapes = [(list(f.columns), [str(d) for d in f.dtypes]) for f in (b, o, t)]
        if shapes[0] != shapes[1] or shapes[0] != shapes[2] or not all(f.index.is_unique for f in (b, o, t)):
            return self.conflict(name, name, b, o, t)  # columns or dtypes changed: the whole frame
        result = o.copy()
        bi, oi, ti = b.index, o.index, t.index
        drop, add = [], []
        for label in bi.intersection(oi, sort=False).difference(ti, sort=False):  # theirs removed it
            item = f"{name}.loc[{label!r}]"
            if _row_same(o, b, label) or self.decide(name, item, _rec(b, label), _rec(o, label), M) == "theirs":
                drop.append(label)
        for label in bi.intersection(ti, sort=False).difference(oi, sort=False):  # ours removed it
            item = f"{name}.loc[{label!r}]"
            if not _row_same(t, b, label) and self.decide(name, item, _rec(b, label), M, _rec(t, label)) == "theirs":
                add.append(label)
        for label in ti.difference(bi, sort=False):  # theirs added it
            item = f"{name}.loc[{label!r}]"
            if label not in oi:
                add.append(label)
            elif not _row_same(o, t, label) and self.decide(name, item, M, _rec(o, label), _rec(t, label)) == "theirs":
                for col in o.columns:
                    result.at[label, col] = t.at[label, col]
        common = bi.intersection(oi, sort=False).intersection(ti, sort=False)
        for col in o.columns:
            bb, oo, tt = (f[col].reindex(common) for f in (b, o, t))
            ob, tb, ot = _eq(oo, bb), _eq(tt, bb), _eq(oo, tt)
            for pos in np.flatnonzero(ob & ~tb):  # only theirs changed the cell
                result.at[common[pos], col] = tt.iloc[pos]
            for pos in np.flatnonzero(~ob & ~tb & ~ot):
                label = common[pos]
                if self.decide(name, f"{name}.loc[{label!r}, {col!r}]", _scalar(bb.iloc[pos]),
                               _scalar(oo.iloc[pos]), _scalar(tt.iloc[pos])) == "theirs":
                    result.at[label, col] = tt.iloc[pos]
        if drop:
            result = result.drop(index=drop)
        if add:
            result = pd.concat([result, t.loc[add]])
        for col, dtype in zip(o.columns, o.dtypes, strict=True):  # .at may have widened a column
            if result[col].dtype != dtype:
                result[col] = result[col].astype(dtype)
        return result


def _scalar(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def _rec(f: pd.DataFrame, label: Any) -> dict[str, Any]:
    return {str(k): _scalar(v) for k, v in f.loc[label].items()}


def _cell_same(a: Any, b: Any) -> bool:
    try:
        if pd.isna(a) and pd.isna(b):
            return True
    except (TypeError, ValueError):
        pass
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return _equal(_scalar(a), _scalar(b)) or bool(_try_eq(a, b))


def _try_eq(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - odd ==: different
        return False


def _row_same(x: pd.DataFrame, y: pd.DataFrame, label: Any) -> bool:
    return all(_cell_same(x.at[label, c], y.at[label, c]) for c in x.columns)


def _eq(x: pd.Series, y: pd.Series) -> np.ndarray:
    try:
        same = (x == y).to_numpy(dtype=bool, na_value=False)
    except (TypeError, ValueError):
        same = np.array([_cell_same(a, b) for a, b in zip(x, y, strict=True)], dtype=bool)
    return same | (x.isna() & y.isna()).to_numpy(dtype=bool, na_value=False)


# ------------------------------------------------------------------ the operation


def _chooser(resolve: Mapping[str, str] | None) -> Choose:
    if resolve is None:
        return lambda _n, _i: None
    if not isinstance(resolve, Mapping):
        raise InvalidArgumentError('resolve= takes a mapping of names (or items) to "ours" or "theirs".')
    for k, v in resolve.items():
        if not isinstance(k, str) or v not in ("ours", "theirs"):
            raise InvalidArgumentError(f'resolve={{{k!r}: {v!r}}}: each value must be "ours" or "theirs".')
    return lambda name, item: resolve.get(item, resolve.get(name))


def merge(sm: StateManager, entity_id: str, source: str, into: str, *, resolve: Mapping[str, str] | None,
          message: str | None, actor: str | None) -> StateSnapshot:
    started = time.perf_counter()
    entity_id = validate.identifier(entity_id, "entity_id")
    source = validate.identifier(source, "source branch")
    into = validate.identifier(into, "into")
    if source == into:
        raise InvalidArgumentError(f"Cannot merge branch {source!r} into itself.")
    choose = _chooser(resolve)
    message = validate.optional_text(message, "message")
    repo = sm._repo

    def read(cur: Any, _a: int) -> tuple[Any, ...]:
        heads = []
        for b in (into, source):
            head = repo.branch_head(cur, entity_id, b)
            if head is None or head[0] is None:
                raise sm._not_found(cur, entity_id, None, b)
            heads.append(head)
        g = graph(sm, cur, entity_id)
        base = merge_base(g, heads[0][0], heads[1][0])
        rows = [repo.read_snapshot_by_id(cur, sid) if sid else None for sid in (base, heads[0][0], heads[1][0])]
        for r in rows:
            if r is not None:
                r.verify()
        return heads, g, rows

    (ours_head, theirs_head), g, (base_row, ours_row, theirs_row) = sm.db.run_hot(read, write=False)
    if ours_row is None or theirs_row is None:
        raise NotFoundError(f"A head of {entity_id!r} was removed meanwhile; try the merge again.")
    if theirs_head[0] in ancestors(g, ours_head[0]):  # merged already: nothing new to bring
        return sm.get(entity_id, ours_head[1], include_expired=True)
    names = list(dict.fromkeys([*ours_row.snapshot.names, *theirs_row.snapshot.names]))
    by_ref: dict[str, SnapshotRow | None] = {}
    both: list[str] = []
    for n in names:
        b, o, t = _stored(base_row, n), _stored(ours_row, n), _stored(theirs_row, n)
        if o == t or b == t:  # the same on both sides, or only ours changed it (perhaps removed it)
            by_ref[n] = ours_row if o is not M else None
        elif b == o:  # only theirs changed it (perhaps removed it)
            by_ref[n] = theirs_row if t is not M else None
        else:
            both.append(n)
    merger = _Merger(choose)
    merged: dict[str, Any] = {}
    if both:
        values = [sm.load(entity_id, r.snapshot.version, include_expired=True,  # only the names both changed
                          names=[n for n in both if n in r.snapshot.names]) if r is not None else {}
                  for r in (base_row, ours_row, theirs_row)]
        for n in both:
            v = merger.value(n, n, *(vals.get(n, M) for vals in values))
            if v is not M:
                merged[n] = v
    if merger.conflicts:
        frame = pd.DataFrame(merger.conflicts, columns=CONFLICT_COLUMNS)
        listed = ", ".join(dict.fromkeys(frame["item"].astype(str).tolist()[:5]))
        raise MergeConflictError(
            f"Merging {source!r} into {into!r} of {entity_id!r}: {len(frame)} conflict(s) ({listed}); nothing was "
            'written. See the error\'s .conflicts and settle them with resolve={"name": "ours" | "theirs"}.', frame)
    ref_names = [n for n in names if n not in merged and by_ref.get(n) is not None]
    state_data = {n: by_ref[n].state_data[n] for n in ref_names if n in by_ref[n].state_data}  # type: ignore[union-attr]
    items = {n: by_ref[n].items[n] for n in ref_names if n not in state_data}  # type: ignore[union-attr]
    content = SnapshotRow(replace(ours_row.snapshot, names=tuple(ref_names)), codecs.dumps(state_data),
                          codecs.dumps(items))
    base_version = base_row.snapshot.version if base_row is not None else None
    merged_from = {"branch": source, "version": theirs_head[1], "snapshot_id": theirs_head[0],
                   "base_version": base_version}
    plan = sm._plan(entity_id, merged, None, message=message or f"merge {source} into {into}", actor=actor,
                    metadata={"merged_from": merged_from}, branch=into, expected_version=ours_head[1],
                    expires_in=None, status=SnapshotStatus.ACTIVE, merge=False, allow_pickle=None)
    plan.kind = TransitionType.MERGE
    plan.transition_meta = {"merged_from": merged_from}

    def copy(cur: Any) -> SnapshotRow:
        now = repo.branch_head(cur, entity_id, source)
        if now is None or now[0] != theirs_head[0]:
            raise ConflictError(f"Branch {source!r} of {entity_id!r} moved during the merge; merge again.",
                                expected=theirs_head[1], actual=now[1] if now else None)
        return content

    plan.copy_from = copy
    snap, transition = sm.db.run_hot(lambda cur, attempt: sm._write(cur, attempt, plan), write=True)
    sm._after_save(plan, snap, transition, started, record=False)
    sm._metrics.record("merge", time.perf_counter() - started)
    return snap
