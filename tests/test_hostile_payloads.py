"""Crafted payloads with valid digests and checksums never crash the reader: each load is a StatekitError.

The attacker can write to the database: chunks whose sha256 matches, descriptors
that point at them, and a snapshot checksum that matches (sha256 is public). Only
deep validation of what is decoded can catch such a payload. Here the hostile
bytes go through the store's own writer (its encoder swapped for the attacker's,
so the digests, links and checksum are whatever the store computes, formula
included); nothing hostile is decoded in this process. Every load, and
``statekit show`` on every hostile entity, runs in a subprocess, so a segfault
or an abort fails the test instead of killing it. Run on SQLite and PostgreSQL.
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from statekit import StateManager, codecs, frames
from statekit.codecs import EncodedItem, digest_of

Forged = tuple[dict[str, Any], dict[str, bytes]]


# ---------------------------------------------------------------- crafting Arrow chunks


def _ipc(arr: pa.Array) -> bytes:
    """An uncompressed one-field stream, so buffers can be patched in place."""
    sink = pa.BufferOutputStream()
    schema = pa.schema([pa.field("v", arr.type)])
    with pa.ipc.new_stream(sink, schema) as writer:
        writer.write_batch(pa.record_batch([arr], schema=schema))
    return sink.getvalue().to_pybytes()


def _patched(arr: pa.Array, old: bytes, new: bytes) -> bytes:
    data = _ipc(arr)
    assert data.count(old) == 1, "the pattern to patch must be unique in the stream"
    return data.replace(old, new)


def _with_chunks(desc: dict[str, Any], chunks: dict[str, bytes]) -> Forged:
    desc = {**desc, "chunks": list(chunks)}
    return desc, chunks


def _frame_with_leaf(df: pd.DataFrame | pd.Series, leaf_of: Callable[[dict[str, Any]], int], data: bytes,
                     length: int | None = None) -> Forged:
    """A valid frame descriptor whose leaf is replaced by ``data`` (its digest made to match).

    The leaf's chunk group is split so the leaf has a chunk of its own; the other
    leaves of the group keep their (valid) values in chunks of their own.
    """
    desc, chunks = frames.encode_value(df)
    i = leaf_of(desc["spec"])
    schema = pa.ipc.read_schema(pa.py_buffer(chunks[desc["schema"]]))
    groups = []
    for first, count, size, digests in desc["groups"]:
        if not first <= i < first + count:
            groups.append([first, count, size, digests])
            continue
        batches = [b for d in digests for b in pa.ipc.open_stream(pa.py_buffer(chunks.pop(d)))]
        for k in range(count):
            if first + k == i:
                groups.append([i, 1, size if length is None else length, [digest_of(data)]])
                chunks[digest_of(data)] = data
                continue
            column = pa.concat_arrays([b.column(k) for b in batches] or [pa.array([], schema.field(first + k).type)])
            own = _ipc(column)
            groups.append([first + k, 1, size, [digest_of(own)]])
            chunks[digest_of(own)] = own
    desc["groups"] = groups
    return _with_chunks(desc, chunks)


def _data_leaf(spec: dict[str, Any]) -> int:
    return int(spec["data"][0]["leaf"])


def _arrow_frame(t: pa.DataType, values: list[Any]) -> pd.DataFrame:
    return pd.DataFrame({"c": pd.Series(values, dtype=pd.ArrowDtype(t))})


def string_offsets_2e9() -> Forged:
    arr = pa.array(["abc", "def"], type=pa.string())
    bad = _patched(arr, struct.pack("<3i", 0, 3, 6), struct.pack("<3i", 0, 3, 2_000_000_000))
    return _frame_with_leaf(_arrow_frame(pa.string(), ["abc", "def"]), _data_leaf, bad)


def string_offsets_small_overrun() -> Forged:  # would leak heap bytes into a value or a message
    arr = pa.array(["abc", "def"], type=pa.string())
    bad = _patched(arr, struct.pack("<3i", 0, 3, 6), struct.pack("<3i", 0, 3, 4000))
    return _frame_with_leaf(_arrow_frame(pa.string(), ["abc", "def"]), _data_leaf, bad)


def large_string_offsets_2e40() -> Forged:
    arr = pa.array(["abc", "def"], type=pa.large_string())
    bad = _patched(arr, struct.pack("<3q", 0, 3, 6), struct.pack("<3q", 0, 3, 2**40))
    return _frame_with_leaf(_arrow_frame(pa.large_string(), ["abc", "def"]), _data_leaf, bad)


def decreasing_offsets() -> Forged:
    arr = pa.array(["abc", "def"], type=pa.string())
    bad = _patched(arr, struct.pack("<3i", 0, 3, 6), struct.pack("<3i", 0, 6, 3))
    return _frame_with_leaf(_arrow_frame(pa.string(), ["abc", "def"]), _data_leaf, bad)


def list_offsets_past_child() -> Forged:
    t = pa.list_(pa.int64())
    arr = pa.array([[11, 12], [13]], type=t)
    bad = _patched(arr, struct.pack("<3i", 0, 2, 3), struct.pack("<3i", 0, 2, 100_000))
    return _frame_with_leaf(_arrow_frame(t, [[11, 12], [13]]), _data_leaf, bad)


def dictionary_index_out_of_bounds() -> Forged:
    t = pa.dictionary(pa.int32(), pa.string())
    words = [f"w{i}" for i in range(7)]
    arr = pa.DictionaryArray.from_arrays(pa.array([5, 6, 5], type=pa.int32()), pa.array(words))
    bad = _patched(arr, struct.pack("<3i", 5, 6, 5), struct.pack("<3i", 5, 1_000_000, 5))
    return _frame_with_leaf(_arrow_frame(t, ["w5", "w6", "w5"]).astype(pd.ArrowDtype(t)), _data_leaf, bad)


def lying_batch_length() -> Forged:
    """The record batch says 2**30 rows over buffers of 3."""
    arr = pa.array([1, 2, 3], type=pa.int64())
    data = _ipc(arr)
    old = struct.pack("<q", 3)
    at = data.index(old)  # the batch length, written before the buffers
    bad = data[:at] + struct.pack("<q", 2**30) + data[at + 8 :]
    return _frame_with_leaf(pd.DataFrame({"c": [1, 2, 3]}), _data_leaf, bad)


def lengths_that_lie() -> Forged:
    return _frame_with_leaf(pd.DataFrame({"c": [1, 2, 3]}), _data_leaf, _ipc(pa.array([1, 2], type=pa.int64())))


def rows_that_lie() -> Forged:
    desc, chunks = frames.encode_value(pd.DataFrame({"c": [1, 2, 3]}))
    desc["rows"] = 10**12
    desc["spec"]["index"]["stop"] = 10**12
    return _with_chunks(desc, chunks)


def chunk_of_another_type() -> Forged:
    return _frame_with_leaf(_arrow_frame(pa.string(), ["a", "b"]), _data_leaf, _ipc(pa.array([1, 2])))


def numpy_spec_on_a_string_leaf() -> Forged:
    desc, chunks = frames.encode_value(_arrow_frame(pa.string(), ["a", "b"]))
    desc["spec"]["data"][0] = {"t": "np", "dtype": "<f8", "leaf": desc["spec"]["data"][0]["leaf"]}
    return _with_chunks(desc, chunks)


def numpy_spec_declaring_objects() -> Forged:
    desc, chunks = frames.encode_value(pd.DataFrame({"c": [1, 2]}))
    desc["spec"]["data"][0]["dtype"] = "|O"
    return _with_chunks(desc, chunks)


def categorical_codes_out_of_range() -> Forged:
    df = pd.DataFrame({"c": pd.Categorical(["c", "c"], categories=["a", "b", "c"])})
    short = _ipc(pa.array(["a"], type=pa.large_string()))
    return _frame_with_leaf(df, lambda s: int(s["data"][0]["categories"]["array"]["leaf"]), short, length=1)


def multiindex_codes_out_of_range() -> Forged:
    df = pd.DataFrame({"c": [1, 2]}, index=pd.MultiIndex.from_arrays([[10, 30], ["x", "y"]]))
    short = _ipc(pa.array([10], type=pa.int64()))
    return _frame_with_leaf(df, lambda s: int(s["index"]["levels"][0]["array"]["leaf"]), short, length=1)


def _objjson(texts: list[str]) -> Forged:
    df = pd.DataFrame({"c": pd.Series([(1,)] * len(texts), dtype=object)})
    return _frame_with_leaf(df, _data_leaf, _ipc(pa.array(texts, type=pa.large_string())))


def object_cells_bad_tag() -> Forged:
    return _objjson(['{"__sk__": "np", "dtype": "|O", "v": 1}'])


def object_cells_deep_nesting() -> Forged:
    return _objjson(["[" * 100_000 + "]" * 100_000])


def object_cells_not_json() -> Forged:
    return _objjson(["{not json"])


def schema_chunk_garbage() -> Forged:
    desc, chunks = frames.encode_value(pd.DataFrame({"c": [1, 2]}))
    garbage = os.urandom(64)
    chunks.pop(desc["schema"])
    desc["schema"] = digest_of(garbage)
    chunks[desc["schema"]] = garbage
    return _with_chunks(desc, chunks)


def truncated_chunk() -> Forged:
    data = _ipc(pa.array(["abc"] * 50))
    return _frame_with_leaf(_arrow_frame(pa.string(), ["abc"] * 50), _data_leaf, data[: len(data) // 2])


def bad_attrs() -> Forged:
    desc, chunks = frames.encode_value(pd.DataFrame({"c": [1]}))
    desc["spec"]["attrs"] = [1, 2]
    return _with_chunks(desc, chunks)


def middle_offset_2e9() -> Forged:
    """Only the offsets in the middle lie: the cheap checks (first and last offset) pass."""
    arr = pa.array(["abc", "def"], type=pa.string())
    bad = _patched(arr, struct.pack("<3i", 0, 3, 6), struct.pack("<3i", 0, 2_000_000_000, 6))
    return _frame_with_leaf(_arrow_frame(pa.string(), ["abc", "def"]), _data_leaf, bad)


def legacy_middle_offset_2e9() -> Forged:
    return legacy_string_offsets((0, 2_000_000_000, 6))


def legacy_string_offsets(offsets: tuple[int, int, int] = (0, 3, 2_000_000_000)) -> Forged:
    """The format written by earlier releases (pandas metadata, one column per list)."""
    table = pa.Table.from_pandas(pd.DataFrame({"s": ["abc", "def"]}).astype(object), preserve_index=False)
    schema = table.schema
    column = pa.array(["abc", "def"], type=schema.field(0).type)
    width = "<3q" if pa.types.is_large_string(column.type) else "<3i"
    bad = _patched(column, struct.pack(width, 0, 3, 6), struct.pack(width, *offsets))
    schema_bytes = schema.serialize().to_pybytes()
    chunks = {digest_of(schema_bytes): schema_bytes, digest_of(bad): bad}
    desc = {"codec": "arrow", "kind": "frame", "rows": 2, "schema": digest_of(schema_bytes),
            "columns": [[digest_of(bad)]], "fixups": {}, "strings": {}, "placeholder": None}
    return _with_chunks(desc, chunks)


# ---------------------------------------------------------------- other codecs


def _npy_header(shape: tuple[int, ...], dtype: str = "<f8") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def _chunked(codec: str, data: bytes) -> Forged:
    return {"codec": codec, "chunks": [digest_of(data)]}, {digest_of(data): data}


def npy_truncated() -> Forged:
    return _chunked("npy", _npy_header((1000,)) + b"\x00" * 8)


def npy_huge_shape() -> Forged:
    return _chunked("npy", _npy_header((2**40, 2**30)) + b"\x00" * 8)


def npy_object_dtype() -> Forged:
    return _chunked("npy", _npy_header((1,), "|O") + b"\x00" * 8)


def npy_bad_magic() -> Forged:
    return _chunked("npy", b"\x93NUMPX" + b"\x00" * 100)


def json_deep_nesting() -> Forged:
    return _chunked("json", b"[" * 200_000 + b"]" * 200_000)


def json_not_utf8() -> Forged:
    return _chunked("json", b'["\xff\xfe"]')


def json_huge_int() -> Forged:
    return _chunked("json", b"[" + b"9" * 10_000 + b"]")


def xjson_wrong_payload_type() -> Forged:
    return {"codec": "xjson", "value": {"__sk__": "tuple", "v": "abc"}, "chunks": []}, {}


def xjson_object_dtype() -> Forged:
    return {"codec": "xjson", "value": {"__sk__": "np", "dtype": "|O", "v": 1}, "chunks": []}, {}


def xjson_zone_path() -> Forged:
    return {"codec": "xjson", "chunks": [], "value": {"__sk__": "datetime", "v": "2024-01-01T00:00:00",
                                                      "tz": "../../../../etc/passwd", "fold": 0}}, {}


def xjson_unknown_tag() -> Forged:
    return {"codec": "xjson", "value": {"__sk__": "exec", "v": "print(1)"}, "chunks": []}, {}


def xjson_deep_nesting_in_chunk() -> Forged:
    return _chunked("xjson", b"[" * 200_000 + b"]" * 200_000)


def pickle_unsigned() -> Forged:
    import pickle

    data = pickle.dumps({"a": 1})
    desc, chunks = _chunked("pickle", data)
    return {**desc, "hmac": "0" * 64, "key_id": "someone"}, chunks


CASES: dict[str, Callable[[], Forged]] = {f.__name__: f for f in [
    string_offsets_2e9, string_offsets_small_overrun, large_string_offsets_2e40, decreasing_offsets,
    list_offsets_past_child, dictionary_index_out_of_bounds, lying_batch_length, lengths_that_lie, rows_that_lie,
    chunk_of_another_type, numpy_spec_on_a_string_leaf, numpy_spec_declaring_objects,
    categorical_codes_out_of_range, multiindex_codes_out_of_range, object_cells_bad_tag, object_cells_deep_nesting,
    object_cells_not_json, schema_chunk_garbage, truncated_chunk, bad_attrs, middle_offset_2e9,
    legacy_string_offsets, legacy_middle_offset_2e9,
    npy_truncated, npy_huge_shape, npy_object_dtype, npy_bad_magic, json_deep_nesting, json_not_utf8,
    json_huge_int, xjson_wrong_payload_type, xjson_object_dtype, xjson_zone_path, xjson_unknown_tag,
    xjson_deep_nesting_in_chunk, pickle_unsigned,
]}


def forge(sm: StateManager, monkeypatch: pytest.MonkeyPatch, entity: str, forged: Forged) -> None:
    """Write ``v`` of a new version of ``entity`` with the attacker's descriptor and chunks."""
    desc, chunks = forged
    real = codecs.encode_item

    def attacker(name: str, value: Any, **kwargs: Any) -> EncodedItem:
        if name != "v":
            return real(name, value, **kwargs)
        return EncodedItem("v", False, descriptor=dict(desc), chunks=dict(chunks),
                           size=sum(map(len, chunks.values())) or 1)

    with monkeypatch.context() as m:
        m.setattr(codecs, "encode_item", attacker)
        sm.save(entity, {"ok": 1, "v": 0})


READER = r"""
import contextlib, io, json, sys
from statekit import StateManager, StatekitError
from statekit.cli import cli
url, entities = sys.argv[1], sys.argv[2:]
for entity in entities:
    print("START", entity, flush=True)
    out = {"entity": entity}
    with StateManager(url, cache_size=0) as sm:
        try:
            value = sm.load(entity)
            out["load"] = "value"
        except StatekitError as exc:
            out["load"] = "StatekitError"
            out["message"] = str(exc)
        except BaseException as exc:
            out["load"] = f"{type(exc).__name__}: {str(exc)[:200]}"
    buf_out, buf_err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(buf_out), contextlib.redirect_stderr(buf_err):
        try:
            cli.main(args=["--url", url, "show", entity], prog_name="statekit", standalone_mode=True)
            out["show"] = 0
        except SystemExit as exc:
            out["show"] = exc.code
        except BaseException as exc:
            out["show"] = f"crash {type(exc).__name__}: {str(exc)[:200]}"
    out["show_output"] = (buf_out.getvalue() + buf_err.getvalue())[-400:]
    print("RESULT", json.dumps(out), flush=True)
"""


def test_hostile_payloads_give_statekit_errors_and_never_crash(
        store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with StateManager(store_url, allow_pickle=True) as sm:
        for case, make in CASES.items():
            forge(sm, monkeypatch, f"h-{case}", make())
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run([sys.executable, "-c", READER, store_url, *[f"h-{c}" for c in CASES]],
                          capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    started = [line.split()[1] for line in proc.stdout.splitlines() if line.startswith("START")]
    assert proc.returncode == 0, (
        f"the reader died (exit {proc.returncode}) while loading {started[-1] if started else '?'}: "
        f"{proc.stderr[-1500:]}")
    results = {r["entity"]: r for r in (json.loads(line[7:]) for line in proc.stdout.splitlines()
                                        if line.startswith("RESULT "))}
    assert len(results) == len(CASES)
    bad = []
    for case in CASES:
        r = results[f"h-{case}"]
        if r["load"] != "StatekitError" or "Snapshot " not in r.get("message", ""):
            bad.append(f"{case}: load gave {r['load']} {r.get('message', '')[:160]}")
        if not isinstance(r["show"], int) or "Traceback" in r["show_output"]:
            bad.append(f"{case}: statekit show gave {r['show']} {r['show_output'][-200:]}")
    assert not bad, "\n".join(bad)
    for r in results.values():  # heap bytes never reach a message
        assert "\x00" not in r.get("message", "")
