"""Search the history by variable: the versions that changed a name or key path, and ``find`` across entities.

``history(entity, changed="params.lr")`` reads the ``changed`` column (see :mod:`statekit.changes`)
of the entity's versions, filtered in SQL by the names the query could start with; no payload is
read, except the inline values of a version whose name changed in too many places to list.

``find(entities=None, name=None, where=None)`` looks at the values stored inline as JSON (plain
JSON values up to the inline limit): ``where={"params.lr": 0.1}`` keeps the versions whose inline
``params`` holds ``lr`` equal to 0.1 (strictly: 1, 1.0 and True differ). ``state_find_index`` (see
:mod:`statekit.history_schema`) answers ``name=`` and each scalar condition with an index lookup, so the
time follows the size of the answer, not of the store; conditions on whole objects or lists are checked
on the versions the other conditions found (alone, they scan). Limits: values stored as chunks
(DataFrames, arrays, large JSON) are not searched by value, only by ``name``; key paths use ``diff()``'s
notation (``a.b``, ``a['x y']``); on SQLite a key holding a double quote cannot be searched inside.
Expired versions are left out.
"""

from __future__ import annotations

import json
import sqlite3
import weakref
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import pandas as pd

from . import changes, validate
from .db import utcnow
from .errors import InvalidArgumentError

if TYPE_CHECKING:
    from .store import StateManager

FIND_COLUMNS = ["entity_id", "version", "branch", "created_at", "snapshot_id"]


def changed_versions(sm: StateManager, entity_id: str, query: str, branch: str | None = None) -> dict[int, list[str]]:
    """version -> the changed items (paths) that match ``query``, for the versions that changed it."""
    if not isinstance(query, str) or not query:
        raise InvalidArgumentError(f"changed= takes a name or a key path such as 'params.lr', not {query!r}.")
    db = sm.db
    names = changes.split_path(query)
    marks = ", ".join(f":n{i}" for i in range(len(names)))
    params: dict[str, Any] = {"e": entity_id, **{f"n{i}": n for i, n in enumerate(names)}}
    if db.is_sqlite:
        cond = f"EXISTS (SELECT 1 FROM json_each(s.changed) c WHERE c.key IN ({marks}))"
        cols = "s.version, s.changed, s.parent_snapshot_id, s.state_data"
    else:
        cond = f"s.changed::jsonb ?| ARRAY[{marks}]::text[]"
        cols = "s.version, s.changed::text, s.parent_snapshot_id, s.state_data::text"
    sql = f"SELECT {cols} FROM state_snapshots s WHERE s.entity_id = :e AND {cond}"
    if branch is not None:
        sql += " AND s.branch = :b"
        params["b"] = branch

    def work(cur: Any, _a: int) -> dict[int, list[str]]:
        cur.execute(db.sql(sql + " ORDER BY s.version"), params)
        out: dict[int, list[str]] = {}
        for version, changed_text, parent_id, data_text in cur.fetchall():
            entry = json.loads(changed_text) if isinstance(changed_text, str) else (changed_text or {})
            hit = changes.matches(entry, query)
            if hit is None:  # listed as "changed somewhere": compare the two inline values
                hit = _inline_differs(cur, db, entry, query, data_text, parent_id)
            if hit:
                out[int(version)] = sorted(_items(entry, query))
        return out

    return db.run_hot(work, write=False)


def _items(entry: dict[str, Any], query: str) -> set[str]:
    found = set()
    for name in changes.split_path(query):
        if name not in entry:
            continue
        for p in entry[name] or [name]:
            if p == query or query.startswith((p + ".", p + "[")) or p.startswith((query + ".", query + "[")):
                found.add(p)
    return found or {query}


def _inline_differs(cur: Any, db: Any, entry: dict[str, Any], query: str, data_text: Any, parent_id: Any) -> bool:
    new = json.loads(data_text) if isinstance(data_text, str) else data_text
    old, _items_ = changes.parent_content(cur, db, parent_id)
    for name in changes.split_path(query):
        if name not in entry:
            continue
        if name not in new and name not in old:
            return True  # stored as chunks on both sides: changed as a whole, as far as SQL can tell
        if changes.value_at(new, name, query) != changes.value_at(old, name, query):
            return True
    return False


def _json_path_sqlite(parts: list[str]) -> str:
    for p in parts:
        if '"' in p or "\\" in p:
            raise InvalidArgumentError(f"find() cannot search inside the key {p!r} on SQLite (it holds a quote).")
    return "$" + "".join(f'."{p}"' for p in parts)


def parse_path(path: str) -> list[str]:
    """``a.b['x y'].c`` -> ['a', 'b', 'x y', 'c'] (keys of JSON objects are texts)."""
    import ast

    if not isinstance(path, str) or not path:
        raise InvalidArgumentError(f"A key path is a non-empty text such as 'params.lr', not {path!r}.")
    parts: list[str] = []
    i, n = 0, len(path)
    start = 0
    while i < n:
        ch = path[i]
        if ch == "." and i > start:
            parts.append(path[start:i])
            start = i + 1
        elif ch == "[":
            if i > start:
                parts.append(path[start:i])
            key, end = None, i
            while key is None and (end := path.find("]", end + 1)) > 0:  # the first ] that closes a string
                try:
                    key = ast.literal_eval(path[i + 1 : end])
                except (ValueError, SyntaxError):
                    key = None
            if not isinstance(key, str):
                raise InvalidArgumentError(f"Cannot read the key path {path!r}: write keys as a.b or a['b c'].")
            parts.append(key)
            i = end + 1
            if i < n and path[i] == ".":
                i += 1
            start = i
            continue
        i += 1
    if start < n:
        parts.append(path[start:])
    return parts


def _extract(db: Any, parts: list[str], i: int, params: dict[str, Any]) -> str:
    """SQL for the JSON text of the inline value at ``parts`` (NULL when absent)."""
    if db.is_sqlite:
        params[f"p{i}"] = _json_path_sqlite(parts)
        j = f":p{i}"
        if sqlite3.sqlite_version_info >= (3, 38):  # -> gives the stored JSON text itself (-0.0 stays -0.0)
            return f"(s.state_data -> {j})"
        return (f"CASE json_type(s.state_data, {j}) WHEN 'true' THEN 'true' WHEN 'false' THEN 'false' "
                f"WHEN 'null' THEN 'null' ELSE json_quote(json_extract(s.state_data, {j})) END")
    params[f"p{i}"] = parts
    # json, not jsonb: the stored text (-0.0 stays -0.0); PostgreSQL cannot take \\u0000 apart: see _RAW_PG
    return f"CASE WHEN strpos(s.state_data::text, '\\u') = 0 THEN (s.state_data #> CAST(:p{i} AS text[]))::text END"


_RAW_PG = "CASE WHEN strpos(s.state_data::text, '\\u') > 0 THEN s.state_data::text END"
"""The whole inline JSON of the rows PostgreSQL's JSON operators refuse (\\u0000): read in Python instead."""


def _at(text: str | None, parts: list[str]) -> Any:
    """The value at ``parts`` in the JSON ``text`` (KeyError when absent)."""
    node = json.loads(text) if text is not None else None
    for p in parts:
        if not isinstance(node, dict) or p not in node:
            raise KeyError(p)
        node = node[p]
    return node


def _index_path(db: Any, parts: list[str], params: dict[str, Any], key: str) -> str:
    """SQL computing the index's ``path`` key of ``parts`` exactly as the triggers do (see history_schema)."""
    from .history_schema import PATH_CHARS

    if not db.is_sqlite:
        params[key] = parts
        return f"left(CAST(:{key} AS text[])::text, {PATH_CHARS})"
    expr = f"json_array(:{key}0)"
    for i, part in enumerate(parts):
        params[f"{key}{i}"] = part
        if i:
            expr = f"json_insert({expr}, '$[#]', :{key}{i})"
    return f"substr({expr}, 1, {PATH_CHARS})"


def _index_val(db: Any, text: str, params: dict[str, Any], key: str) -> str:
    """SQL computing the index's ``val`` key of the JSON ``text`` exactly as the triggers do."""
    from .history_schema import pg_val, sqlite_val

    params[key] = text
    if db.is_sqlite:
        return f"(SELECT {sqlite_val('e.type', 'e.value')} FROM json_each(json_array(json(:{key}))) e)"
    return pg_val(f"CAST(:{key} AS jsonb)")


def _candidates(path_sql: str, val_sql: str, *, drive: bool) -> str:
    """The versions the index lists for (path, val), and those it could not index ('*').

    The driving lookup lists them (``IN``); the others probe the index for each row found (``EXISTS``),
    so no lookup reads more index rows than the answer needs.
    """
    if drive:
        return (f"s.snapshot_id IN (SELECT i.snapshot_id FROM state_find_index i WHERE i.path = {path_sql} "
                f"AND i.val = {val_sql} UNION ALL SELECT i.snapshot_id FROM state_find_index i "
                "WHERE i.path = '*' AND i.val = '*')")
    return (f"(EXISTS (SELECT 1 FROM state_find_index i WHERE i.path = {path_sql} AND i.val = {val_sql} "
            "AND i.snapshot_id = s.snapshot_id) OR EXISTS (SELECT 1 FROM state_find_index i "
            "WHERE i.path = '*' AND i.val = '*' AND i.snapshot_id = s.snapshot_id))")


def _rarest(db: Any, lookups: list[tuple[str, str]], params: dict[str, Any]) -> int:
    """The index of the lookup with the fewest index rows: it drives the query.

    The rows are counted up to a cap that grows fourfold while every count reaches it, so finding the
    rarest costs about as much as reading it; ties go to the earlier lookup (conditions before name=).
    """
    if len(lookups) < 2:
        return 0
    cap = RAREST_CAP
    while True:
        sql = " UNION ALL ".join(
            f"SELECT {n}, (SELECT count(*) FROM (SELECT 1 FROM state_find_index i WHERE i.path = {p} "
            f"AND i.val = {v} LIMIT {cap}) c)" for n, (p, v) in enumerate(lookups))

        def work(cur: Any, _a: int, sql: str = sql) -> list[tuple[Any, ...]]:
            cur.execute(db.sql(sql), params)
            return cur.fetchall()

        counts = sorted(db.run_hot(work, write=False), key=lambda r: (r[1], r[0]))
        if counts[0][1] < cap or cap >= RAREST_CAP * 4**8:
            return int(counts[0][0])
        cap *= 4


RAREST_CAP = 1_000


_indexed: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()


def has_index(db: Any) -> bool:
    """Whether the store has ``state_find_index`` (a store made before it existed is scanned)."""
    found = _indexed.get(db)
    if found is None:
        sql = ("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'state_find_index'" if db.is_sqlite
               else "SELECT to_regclass('state_find_index') IS NOT NULL")

        def work(cur: Any, _a: int) -> bool:
            cur.execute(sql)
            row = cur.fetchone()
            return bool(row and row[0])

        found = _indexed[db] = db.run_hot(work, write=False)
    return found


def find(sm: StateManager, entities: Iterable[str] | str | None = None, name: str | None = None,
         where: Mapping[str, Any] | None = None, *, include_expired: bool = False) -> pd.DataFrame:
    """Every version (of ``entities``, default all) that holds ``name`` and whose inline values match ``where``.

    ``state_find_index`` narrows the versions to look at (one lookup per scalar condition); each
    candidate is then checked as a scan would check it, so the index changes the time, not the answer.
    """
    db = sm.db
    params: dict[str, Any] = {}
    conds: list[str] = []
    lookups: list[tuple[str, str]] = []  # (path, val) SQL of each condition the index can answer
    name_lookup: tuple[str, str] | None = None
    if isinstance(entities, str):
        entities = [entities]
    if entities is not None and not isinstance(entities, Iterable):
        raise InvalidArgumentError(f"entities= takes a list of entity ids, not {type(entities).__name__}.")
    if entities is not None:
        ids = [validate.identifier(e, "entity_id") for e in entities]
        if not ids:
            return pd.DataFrame(columns=FIND_COLUMNS)
        conds.append(f"s.entity_id IN ({', '.join(f':e{i}' for i in range(len(ids)))})")
        params.update({f"e{i}": e for i, e in enumerate(ids)})
    if name is not None:
        params["name"] = validate.item_name(name)
        conds.append("EXISTS (SELECT 1 FROM json_each(s.names) n WHERE n.value = :name)" if db.is_sqlite
                     else "jsonb_exists(s.names::jsonb, :name)")
        name_lookup = (_index_path(db, [params["name"]], params, "xn"), "'name:'")
    if where is not None and not isinstance(where, Mapping):
        raise InvalidArgumentError("where= takes a mapping of key paths to values, e.g. {'params.lr': 0.1}.")
    wanted = dict(where or {})
    extracts, paths = [], []
    for i, path in enumerate(wanted):
        parts = parse_path(path)
        paths.append(parts)
        expr = _extract(db, parts, i, params)
        extracts.append(expr)
        conds.append(f"{expr} IS NOT NULL" if db.is_sqlite else f"({expr} IS NOT NULL OR {_RAW_PG} IS NOT NULL)")
        try:
            wanted[path] = changes._canon(wanted[path])
        except (TypeError, ValueError):
            raise InvalidArgumentError(f"find() compares plain JSON values; {wanted[path]!r} at {path!r} is not one.") \
                from None
        scalar = not wanted[path].startswith(("{", "["))
        if scalar and (db.is_sqlite or "\\u" not in wanted[path]):  # jsonb refuses some \u escapes
            lookups.append((_index_path(db, parts, params, f"xp{i}_"), _index_val(db, wanted[path], params, f"xv{i}")))
    if name_lookup is not None:  # last: a name is usually in most versions, so it rarely drives
        lookups.append(name_lookup)
    if lookups and has_index(db):
        # with entities= their rows drive the query and every lookup probes; else the rarest lookup drives
        drive = -1 if entities is not None else _rarest(db, lookups, params)
        conds = [_candidates(p, v, drive=n == drive) for n, (p, v) in enumerate(lookups)] + conds
    if not include_expired:
        conds.append("(s.expires_at IS NULL OR s.expires_at > :now)")
        params["now"] = db.ts(utcnow())
    raw = "NULL" if db.is_sqlite or not wanted else _RAW_PG
    cols = ", ".join(["s.entity_id", "s.version", "s.branch", "s.created_at", "s.snapshot_id", raw, *extracts])
    sql = f"SELECT {cols} FROM state_snapshots s" + (f" WHERE {' AND '.join(conds)}" if conds else "")
    sql += " ORDER BY s.entity_id, s.version"

    def work(cur: Any, _a: int) -> list[tuple[Any, ...]]:
        cur.execute(db.sql(sql), params)
        return cur.fetchall()

    rows = []
    for r in db.run_hot(work, write=False):
        try:
            values = [json.loads(t) if r[5] is None else _at(r[5], parts) for t, parts in zip(r[6:], paths, strict=True)]
        except KeyError:
            continue
        if all(changes._canon(v) == wanted[p] for v, p in zip(values, wanted, strict=True)):
            rows.append((*r[:5], *values))
    frame = pd.DataFrame(rows, columns=FIND_COLUMNS + list(wanted))
    frame["version"] = frame["version"].astype("int64")
    frame["created_at"] = pd.to_datetime(frame["created_at"], utc=True, format="ISO8601")
    return frame
