"""Reading frames written before format 2 (pyarrow's pandas metadata, one chunk per column per 65,536 rows).

Kept only so stores written by earlier releases still load. Every chunk is
validated in full against the stored schema before pandas sees it; ArrowDtype
columns whose type pandas cannot parse from pyarrow's metadata (lists, structs,
maps, dictionaries, decimals...) are rebuilt from the Arrow type itself.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from . import tagged_json

PLACEHOLDER = "__statekit_placeholder__"


def _pandas_metadata_without_arrow_dtypes(schema: pa.Schema) -> tuple[pa.Schema, set[str]]:
    """Mark ``X[pyarrow]`` columns as plain in the metadata; return the names to map to ArrowDtype."""
    meta = schema.metadata or {}
    raw = meta.get(b"pandas")
    if raw is None:
        return schema, set()
    info = json.loads(raw)
    arrow_cols: set[str] = set()
    for col in info.get("columns", []):
        # earlier releases refused object columns of Decimals: a decimal column was an ArrowDtype one
        if (isinstance(col.get("numpy_type"), str) and col["numpy_type"].endswith("[pyarrow]")
                or col.get("pandas_type") == "decimal"):
            arrow_cols.add(str(col.get("field_name")))
            col["numpy_type"] = "object"
    if not arrow_cols:
        return schema, set()
    return schema.with_metadata({**meta, b"pandas": json.dumps(info).encode()}), arrow_cols


def decode(desc: Mapping[str, Any], read: Callable[[list[str]], dict[str, bytes]],
           read_ipc: Callable[[bytes, pa.DataType], list[pa.Array]]) -> Any:
    wanted = [desc["schema"], *[d for col in desc["columns"] for d in col]]
    data = read(wanted)
    schema = pa.ipc.read_schema(pa.py_buffer(data[desc["schema"]]))
    if len(desc["columns"]) != len(schema):
        raise ValueError("the descriptor and the schema disagree on the number of columns")
    rows = int(desc["rows"])
    arrays = []
    for i, digests in enumerate(desc["columns"]):
        ftype = schema.field(i).type
        pieces = [p for d in digests for p in read_ipc(data[d], ftype)]
        arr = pa.chunked_array(pieces, type=ftype)
        if len(arr) != rows:
            raise ValueError(f"column {i} holds {len(arr)} rows, the descriptor says {rows}")
        arrays.append(arr)
    schema, arrow_cols = _pandas_metadata_without_arrow_dtypes(schema)
    table = pa.Table.from_arrays(arrays, schema=schema)
    arrow_types = {schema.field(n).type for n in arrow_cols if n in schema.names}
    df = table.to_pandas(types_mapper=lambda t: pd.ArrowDtype(t) if t in arrow_types else None)
    for pos, fix in desc.get("fixups", {}).items():
        p = int(pos)
        col = df.iloc[:, p].astype(object)
        df.isetitem(p, col.where(col.notna(), np.nan if fix == "nan" else None))
    if desc.get("placeholder"):
        df = df.drop(columns=[PLACEHOLDER])
        kind = desc["placeholder"]
        df.columns = pd.RangeIndex(0) if kind == "range" else pd.Index([], dtype=kind)
    for pos, (storage, na) in desc.get("strings", {}).items():
        p = int(pos)
        want = pd.StringDtype(storage, na_value=np.nan if na == "nan" else pd.NA)
        if df.dtypes.iloc[p] != want:
            df.isetitem(p, df.iloc[:, p].astype(want))
    if desc["kind"] == "series":
        s = df.iloc[:, 0]
        s.name = tagged_json.decode(desc["series_name"])
        return s
    return df
