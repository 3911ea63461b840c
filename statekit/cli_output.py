"""What the ``statekit`` command prints: tables and previews, with stored text made safe for a terminal.

Everything printed comes from the store, and anyone who can save can put text
there: every label, cell, message and error goes through ``terminal_safe``, so
escape sequences show as ``\\x1b`` instead of acting on the terminal.
"""

from __future__ import annotations

import json
import math
import sys
from datetime import datetime
from typing import Any

import click
import numpy as np
import pandas as pd

from .formatting import json_safe, terminal_safe
from .preview import Preview
from .validate import shown

MAX_ROWS = 100
"""A table on a terminal stops here; --json prints everything."""


def echo(text: str, err: bool = False) -> None:
    """Print text that is already terminal-safe, in whatever encoding the stream has (never failing on it)."""
    stream = sys.stderr if err else sys.stdout
    encoding = getattr(stream, "encoding", None) or "utf-8"
    try:
        text.encode(encoding)
    except (UnicodeEncodeError, LookupError):
        enc = encoding if known(encoding) else "ascii"
        text = text.encode(enc, "backslashreplace").decode(enc)
    click.echo(text, err=err)


def known(encoding: str) -> bool:
    try:
        "".encode(encoding)
    except LookupError:
        return False
    return True


def say(text: str) -> None:
    """One line built from stored text (names, messages, paths): escaped for the terminal."""
    echo(terminal_safe(text))


def table(frame: pd.DataFrame, empty: str) -> None:
    if frame.empty:
        if empty:
            echo(empty)
        return
    shown = frame.head(MAX_ROWS)
    cells = [[cell(v) for v in shown.iloc[:, j]] for j in range(shown.shape[1])]
    text = pd.DataFrame(dict(enumerate(cells)), index=range(len(shown)))
    text.columns = [terminal_safe(c) for c in shown.columns]
    echo(text.to_string(index=False, max_colwidth=60))
    if len(frame) > MAX_ROWS:
        echo(f"... and {len(frame) - MAX_ROWS} more rows (--json prints them all)")


def head_table(head: pd.DataFrame | pd.Series) -> None:
    """The first rows of a stored frame, every label and cell escaped (labels may be anything)."""
    frame = head.to_frame() if isinstance(head, pd.Series) else head
    cells = [[cell(frame.iloc[i, j]) for j in range(frame.shape[1])] for i in range(frame.shape[0])]
    text = pd.DataFrame(cells, columns=[cell(c) for c in frame.columns], index=[cell(i) for i in frame.index])
    echo(text.to_string(max_colwidth=40))


def cell(v: Any) -> str:
    """One value as terminal-safe text on one line."""
    try:
        if v is None or v is pd.NA or v is pd.NaT or (isinstance(v, float) and math.isnan(v)):
            return ""
        if isinstance(v, (pd.Timestamp, datetime)):
            text = v.strftime("%Y-%m-%d %H:%M:%S")
        elif isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v):
            text = ", ".join(v)
        elif isinstance(v, (dict, list, tuple)):
            text = json.dumps(json_safe(v), ensure_ascii=False) if v else ""
        elif isinstance(v, str):
            text = v
        else:
            text = repr(v) if not isinstance(v, (int, float, np.number)) else str(v)
    except Exception:  # noqa: BLE001 - a value whose str() fails still gets a cell
        text = f"<{shown(v, 200)}>"
    return terminal_safe(text)


def summary(p: Preview, width: int = 70) -> str:
    if p.type_name == "DataFrame" and p.shape is not None and p.dtypes is not None:
        cols = ", ".join(f"{cell(c)}: {t}" for c, t in p.dtypes)
        text = f"{p.shape[0]} rows x {p.shape[1]} columns ({cols})"
    elif p.type_name == "Series" and p.shape is not None and p.dtypes is not None:
        text = f"{p.shape[0]} values, dtype {p.dtypes[0][1]}"
    elif p.type_name == "ndarray" and p.shape is not None and p.dtypes is not None:
        text = f"shape {p.shape}, dtype {p.dtypes[0][1]}"
    else:
        try:
            text = " ".join(repr(p.value).split())
        except Exception:  # noqa: BLE001 - a broken __repr__ of an unpickled value
            text = f"<{shown(p.value, 200)}>"
    text = terminal_safe(text)
    return text if len(text) <= width else text[: width - 1] + "…"


def preview_json(p: Preview) -> Any:
    """A value for ``show --json``: small values whole; frames, series and arrays as shape, dtypes and first rows
    (with ``"truncated": true`` when those are not all of it)."""
    out: dict[str, Any]
    if p.type_name in ("DataFrame", "Series") and isinstance(p.head, (pd.DataFrame, pd.Series)):
        head = p.head.to_frame() if isinstance(p.head, pd.Series) else p.head
        out = {"type": p.type_name, "shape": list(p.shape or ()), "dtypes": [[c, t] for c, t in p.dtypes or []],
               "columns": list(head.columns), "index": list(head.index),
               "data": [[head.iloc[i, j] for j in range(head.shape[1])] for i in range(head.shape[0])]}
        if p.type_name == "Series":
            out["name"] = head.columns[0]
    elif p.type_name == "ndarray" and isinstance(p.head, np.ndarray):
        shape = list(p.shape or ())
        data = p.head.reshape(shape).tolist() if not p.partial else p.head.tolist()
        out = {"type": "ndarray", "dtype": (p.dtypes or [(None, "")])[0][1], "shape": shape, "data": data}
    else:
        return p.value
    if p.partial:
        out["truncated"] = True
    return out


def size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def snapshot_dict(snap: Any) -> dict[str, Any]:
    keys = ["entity_id", "version", "branch", "kind", "state_type", "status", "created_at", "expires_at", "actor",
            "message", "parent_version", "snapshot_id", "parent_snapshot_id", "checksum", "names", "size_bytes",
            "new_bytes", "metadata"]
    return {k: getattr(snap, k) for k in keys}


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [{k: plain(v) for k, v in row.items()} for row in frame.to_dict(orient="records")]


def plain(v: Any) -> Any:
    if v is None or v is pd.NA or v is pd.NaT or (isinstance(v, float) and math.isnan(v)):
        return None
    return v
