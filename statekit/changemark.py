"""The change mark: proof that a DataFrame or Series is unchanged since a moment, or no claim.

Shared by the frame memo (:mod:`statekit.memo`) and the notebook's change tracker
(:mod:`statekit.notebook.changes`), each keeping its own policy. Block identity under
copy-on-write is not enough: pandas only protects the writes it makes itself, not
writes through the ndarray a ``copy=False`` frame was built on, ``Series.array``, a
view made writeable again, nor ``attrs`` / ``index.name`` changed in place. A mark is:

- a **structure key**: type, shape, each block's arrays (address, shape, strides,
  dtype), the axes (their arrays, names), the Series name, ``attrs`` (a digest of its
  pickle) and ``flags``;
- for each numpy array holding data, a proof: **sealed** when pandas' reference
  tracking explains every Python reference to it and to the arrays its memory comes
  from (``sys.getrefcount`` against tracked blocks and indexes, base links and our
  registry): we make those arrays read-only while the mark lives, so no later view
  can be made writeable, and pandas, seeing the mark's shallow copy (the *guard*),
  copies a block before writing it; a check is a flag read. Otherwise **hashed**
  (memory an array the user holds shares, a foreign buffer, object dtype,
  categories): a sha256 of its bytes (or pickle), recomputed at each check.

Arrow arrays are immutable through pyarrow: their buffer addresses are in the key (the
guard keeps them alive). Not seen: raw-pointer writes (ctypes, C code ignoring numpy's
flags), an owner fetched with ``.base``, flipped writeable, written and flipped back
before the check, and Arrow buffers built zero-copy over a numpy array the user writes.
Releasing the last mark on an array restores its flag, and that of views pandas made meanwhile.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import pickle
import sys
import threading
import weakref
from collections import Counter
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd

_LOCK = threading.Lock()
_SEALED: dict[int, list[Any]] = {}  # id(array) -> [array, number of live marks sealing it, we flipped it]
_CAPSULE = type(__import__("datetime").datetime_CAPI)  # the opaque base pyarrow gives the arrays it allocates


class Unprovable(Exception):
    """The value holds something this module cannot key: take no mark."""


# ---------------------------------------------------------------- leaves: the arrays holding the data


def _ea_leaves(arr: Any) -> Iterator[tuple[Any, str, Any]]:
    """(holder, attribute, value) for the numpy arrays and nested parts of an extension array."""
    seen: set[int] = set()
    for attr in ("_ndarray", "_data", "_mask", "_codes", "_left", "_right"):
        part = getattr(arr, attr, None)
        if part is not None and not callable(part) and id(part) not in seen:  # Categorical: _codes is _ndarray
            seen.add(id(part))
            yield arr, attr, part


def _leaves(values: Any, out: list[Any], key: list[Any]) -> None:
    """Append to ``out`` the numpy arrays behind ``values`` (in a stable order) and to ``key``
    what identifies the rest; raise Unprovable for an array type we do not know."""
    if isinstance(values, np.ndarray):
        out.append(values)
        key.append(("np", values.__array_interface__["data"][0], values.shape, values.strides, values.dtype.str))
        return
    pa_array = getattr(values, "_pa_array", None)
    if pa_array is not None:
        addrs = tuple((b.address, b.size) if b is not None else None for c in pa_array.chunks for b in c.buffers())
        key.append(("pa", type(values).__name__, str(values.dtype), len(values), addrs))
        return
    parts = list(_ea_leaves(values))
    if not parts or type(values).__name__ in ("SparseArray",):
        raise Unprovable(type(values).__name__)
    key.append(("ea", type(values).__name__, str(values.dtype), str(getattr(values, "freq", None)),
                str(getattr(values, "closed", ""))))
    for _holder, _attr, part in parts:
        _leaves(part, out, key)
    categories = getattr(getattr(values, "dtype", None), "categories", None)
    if isinstance(categories, pd.Index):
        key.append(("cats", bool(values.dtype.ordered)))
        _index_leaves(categories, out, key)


def _name_key(names: Any) -> tuple[Any, ...]:
    """Names compared by value; a NaN name equals itself here (else the frame would never be unchanged)."""
    return tuple((type(n).__name__, "<nan>" if isinstance(n, float) and n != n else n) for n in names)


def _index_leaves(index: pd.Index, out: list[Any], key: list[Any]) -> None:
    key.append(("index", id(index), type(index).__name__, str(index.dtype), _name_key(index.names)))
    if isinstance(index, pd.RangeIndex):
        key.append((index.start, index.stop, index.step))
    elif isinstance(index, pd.MultiIndex):
        for level in index.levels:
            _index_leaves(level, out, key)
        for codes in index.codes:
            _leaves(codes, out, key)
    else:
        _leaves(index._data, out, key)  # noqa: SLF001 - the Index's array; .array may copy


def _structure(obj: Any) -> tuple[tuple[Any, ...], list[Any]]:
    """(the structure key, the numpy leaves in order) of a DataFrame or Series."""
    out: list[Any] = []
    key: list[Any] = [type(obj).__name__, obj.shape, _attrs_key(obj), obj.flags.allows_duplicate_labels]
    if isinstance(obj, pd.Series):
        key.append(("name", _name_key([obj.name])))
    for blk in obj._mgr.blocks:  # noqa: SLF001 - the block arrays; there is no public equivalent
        key.append(("blk", blk.mgr_locs.as_array.tobytes(), str(blk.dtype)))
        _leaves(blk.values, out, key)
    for axis in obj.axes:
        _index_leaves(axis, out, key)
    return tuple(key), out


def _attrs_key(obj: Any) -> Any:
    attrs = obj.attrs
    if not attrs:
        return ()
    try:
        return hashlib.sha256(pickle.dumps(attrs, protocol=5)).hexdigest()
    except Exception as exc:  # noqa: BLE001 - attrs we cannot read back are not provable
        raise Unprovable("attrs") from exc


# ---------------------------------------------------------------- privacy: who can reach the memory


def _hold(objs: dict[int, Any], expected: Counter[int], obj: Any) -> bool:
    expected[id(obj)] += 1
    new = id(obj) not in objs
    objs[id(obj)] = obj
    return new


def _tracked(obj: Any, with_axes: bool) -> Iterator[tuple[Any, Any]]:
    """(holder, array) for what pandas' reference tracking knows shares the value's memory:
    every live block sharing a block's memory; with ``with_axes``, every flat index, the
    indexes and blocks sharing its memory, and the array its lookup engine keeps."""
    for blk in obj._mgr.blocks:  # noqa: SLF001 - see module docstring
        for ref in blk.refs.referenced_blocks:
            other = ref()
            if other is not None:
                yield other, other.values
    if not with_axes:
        return
    for axis in obj.axes:
        if isinstance(axis, (pd.RangeIndex, pd.MultiIndex)):
            continue
        family = [r() for r in axis._references.referenced_blocks] if axis._references is not None else []  # noqa: SLF001
        engines: set[int] = set()
        for other in [axis, *(o for o in family if o is not None and o is not axis)]:
            if isinstance(other, pd.Index):
                yield other, other._data  # noqa: SLF001 - the Index's array
                engine = other._cache.get("_engine")  # noqa: SLF001 - views of an index share their cache
                values = getattr(engine, "values", None)
                if isinstance(values, np.ndarray) and id(engine) not in engines:
                    engines.add(id(engine))
                    yield engine, values
            else:
                yield other, other.values


def _inventory(obj: Any, with_axes: bool) -> tuple[dict[int, Any], Counter[int]] | None:
    """Every array (and extension array) over the value's data, with the references pandas
    accounts for; None when some memory comes from somewhere we cannot follow."""
    objs: dict[int, Any] = {}
    expected: Counter[int] = Counter()
    containers: list[Any] = []
    for _holder, values in _tracked(obj, with_axes):
        if _hold(objs, expected, values):
            containers.append(values)
    while containers:
        item = containers.pop()
        if isinstance(item, np.ndarray):
            if type(item) is not np.ndarray or item.dtype.hasobject:
                return None
            base = item.base
            if base is None:
                continue
            if isinstance(base, np.ndarray):
                if _hold(objs, expected, base):
                    containers.append(base)
            elif type(base) is not _CAPSULE:  # a buffer someone else may hold and write
                return None
            continue
        if getattr(item, "_pa_array", None) is not None:
            continue
        parts = list(_ea_leaves(item))
        if not parts:
            return None
        for _holder, _attr, part in parts:
            if _hold(objs, expected, part):
                containers.append(part)
    return objs, expected


def _extra_references(objs: dict[int, Any]) -> dict[int, int]:
    return {k: sys.getrefcount(v) for k, v in objs.items()}


_BASE_REFS = _extra_references({0: np.empty(0)})[0]  # what the counting itself adds


def _private(objs: dict[int, Any], expected: Counter[int]) -> bool:
    counts = _extra_references(objs)
    known = Counter(expected)
    with _LOCK:  # the registry holds sealed arrays, some no longer in any block, and so their bases
        for k, (arr, _n, _flipped) in _SEALED.items():
            if k in objs and objs[k] is arr:
                known[k] += 1
            elif k not in objs and isinstance(arr.base, np.ndarray) and id(arr.base) in objs:
                known[id(arr.base)] += 1
    return all(counts[k] - _BASE_REFS == known[k] for k in objs)


# ---------------------------------------------------------------- sealing


def _flags_offset() -> int | None:
    """Where numpy keeps an array's flags, to restore WRITEABLE on arrays whose base is an
    opaque capsule (numpy refuses to set it back there although the memory is writeable)."""
    probe = np.zeros(1)
    for offset in range(16, 128, 4):
        if ctypes.c_int.from_address(id(probe) + offset).value == probe.flags.num:
            probe.flags.writeable = False
            if ctypes.c_int.from_address(id(probe) + offset).value == probe.flags.num:
                return offset
            probe.flags.writeable = True
    return None  # pragma: no cover


_FLAGS_OFFSET = _flags_offset()
_WRITEABLE = 0x0400  # NPY_ARRAY_WRITEABLE


def _make_writeable(arr: np.ndarray, *, ours: bool) -> None:
    """Set WRITEABLE; for an array we made read-only (``ours``) even where numpy refuses to."""
    try:
        arr.flags.writeable = True
    except ValueError:
        if not ours or _FLAGS_OFFSET is None or not isinstance(arr.base, _CAPSULE):
            raise
        flags = ctypes.c_int.from_address(id(arr) + _FLAGS_OFFSET)
        if flags.value != arr.flags.num:  # pragma: no cover - the layout is not what we expect
            raise
        flags.value |= _WRITEABLE


def _depth(arr: np.ndarray) -> int:
    depth = 0
    while isinstance(arr.base, np.ndarray):
        arr, depth = arr.base, depth + 1
    return depth


def _seal(objs: dict[int, Any]) -> list[int] | None:
    """Make every array read-only (remembering which we flipped); None when one could not be restored."""
    arrays = [a for a in objs.values() if isinstance(a, np.ndarray)]
    if _FLAGS_OFFSET is None and any(isinstance(a.base, _CAPSULE) and a.flags.writeable for a in arrays):
        return None
    with _LOCK:
        for arr in arrays:
            entry = _SEALED.get(id(arr))
            if entry is None or entry[0] is not arr:
                _SEALED[id(arr)] = [arr, 1, arr.flags.writeable]
            else:
                entry[1] += 1
        for arr in sorted(arrays, key=_depth, reverse=True):  # views first, then their owners
            arr.flags.writeable = False
    return [id(a) for a in arrays]


def _tracked_arrays(guard: Any) -> Iterator[np.ndarray]:
    """The numpy arrays of every live block and index sharing memory with the guard's."""
    todo = [values for _holder, values in _tracked(guard, True)]
    while todo:
        values = todo.pop()
        if isinstance(values, np.ndarray):
            yield values
        else:
            todo.extend(part for _h, _a, part in _ea_leaves(values))


def _owner(arr: np.ndarray) -> np.ndarray:
    while isinstance(arr.base, np.ndarray):
        arr = arr.base
    return arr


def _unseal(ids: list[int], guard: Any) -> None:
    """Give back write access when the last mark on an array goes, to that array and to the
    blocks pandas derived from it meanwhile (born read-only, pandas would fail writing them)."""
    restore = []
    with _LOCK:
        for k in ids:
            entry = _SEALED.get(k)
            if entry is None:
                continue
            entry[1] -= 1
            if entry[1] <= 0:
                del _SEALED[k]
                if entry[2]:
                    restore.append(entry[0])
        for arr in sorted(restore, key=_depth):  # owners first, so their views may follow
            with contextlib.suppress(ValueError):  # stays read-only: pandas copies it before writing
                _make_writeable(arr, ours=True)
        restored = {id(a) for a in restore}
        if restored:  # views pandas made of that memory while it was sealed were born read-only
            for arr in sorted(_tracked_arrays(guard), key=_depth):
                if not arr.flags.writeable and id(arr) not in _SEALED and id(_owner(arr)) in restored:
                    with contextlib.suppress(ValueError):
                        _make_writeable(arr, ours=False)


def _still_sealed(ids: list[int]) -> bool:
    with _LOCK:
        return all(k in _SEALED and not _SEALED[k][0].flags.writeable for k in ids)


# ---------------------------------------------------------------- the mark


def digest(arr: np.ndarray) -> str:
    """sha256 of an array's dtype, shape and bytes (of its pickle for object dtype)."""
    h = hashlib.sha256(f"{arr.dtype.str}{arr.shape}".encode())
    if arr.dtype.hasobject:
        h.update(pickle.dumps(arr, protocol=5))
    elif arr.flags.c_contiguous:
        h.update(arr.reshape(-1).view(np.uint8).data)  # uint8: datetime64 has no buffer format
    elif arr.flags.f_contiguous:
        h.update(arr.T.reshape(-1).view(np.uint8).data)
    else:
        h.update(np.ascontiguousarray(arr).reshape(-1).view(np.uint8).data)
    return h.hexdigest()


class Mark:
    """A DataFrame or Series as it was when marked. Take one with :func:`take`."""

    __slots__ = ("__weakref__", "_digests", "_sealed", "guard", "key")

    def __init__(self, key: tuple[Any, ...], guard: Any, sealed: list[int], digests: dict[int, str]):
        self.key = key
        self.guard = guard  # a shallow copy: keeps pandas' copy-on-write on, and the memory alive
        self._sealed = sealed
        self._digests = digests
        if sealed:
            weakref.finalize(self, _unseal, sealed, guard)

    @property
    def sealed(self) -> bool:
        """True when the check costs no hashing."""
        return not self._digests

    def unchanged(self, obj: Any) -> bool:
        """True only when ``obj`` provably holds what the marked value held."""
        if type(obj) is not type(self.guard):
            return False
        try:
            key, leaves = _structure(obj)
            if key != self.key:
                return False
        except Exception:  # noqa: BLE001 - anything odd (names whose == fails, ...) counts as changed
            return False
        return self._content_intact(leaves)

    def intact(self) -> bool:
        """True when the guard still holds the marked content (so comparing a value with it is fair)."""
        try:
            _key, leaves = _structure(self.guard)
        except Exception:  # noqa: BLE001
            return False
        return self._content_intact(leaves)

    def _content_intact(self, leaves: list[Any]) -> bool:
        if self._sealed and not _still_sealed(self._sealed):
            return False
        return all(i < len(leaves) and digest(leaves[i]) == d for i, d in self._digests.items())


def take(obj: Any) -> Mark | None:
    """Mark a DataFrame or Series as it is now, or None when it holds something we cannot key."""
    if not isinstance(obj, (pd.DataFrame, pd.Series)):
        return None
    try:
        guard = obj.copy(deep=False)
        sealed = None
        for with_axes in (True, False):  # the index's memory too if we can, else the blocks' alone
            inventory = _inventory(obj, with_axes)
            if inventory is not None and _private(*inventory):
                sealed = _seal(inventory[0])
            del inventory  # its references would count as outside ones
            if sealed is not None:
                break
        key, leaves = _structure(obj)
    except Exception:  # noqa: BLE001 - an unusual value is simply not marked
        return None
    covered = set(sealed or ())
    try:  # what is not sealed (categories, a shared index, ...) is hashed
        digests = {i: digest(leaf) for i, leaf in enumerate(leaves) if id(leaf) not in covered}
    except Exception:  # noqa: BLE001 - unpicklable objects inside: no proof possible
        if sealed:
            _unseal(sealed, guard)
        return None
    return Mark(key, guard, sealed or [], digests)
