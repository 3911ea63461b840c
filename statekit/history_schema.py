"""Schema 3: history as data. The migration from schema 2, and the SQL views over the history.

Two views let any SQL tool read the history without decoding payloads (both backends):

- ``statekit_history``: one row per version: entity_id, version, branch, kind (create, update,
  rollback, merge...), parent_version, merge_parent_version (the second parent of a merge),
  created_at, actor, message, names and changed (JSON), tags (comma-separated), size_bytes,
  new_bytes, status, expires_at, snapshot_id, parent_snapshot_id.
- ``statekit_names``: one row per version and name it holds: entity_id, version, branch, name,
  changed (whether that version changed it) and value (the JSON of an inline value, else NULL).

The audit trail is the ``state_transitions`` table itself.

``state_find_index`` lets ``find(name=..., where=...)`` look values up instead of scanning every
version: one row (path, val, snapshot_id) per name a version holds (val ``'name:'``) and per scalar
leaf of its inline JSON reached through object keys (path: the keys as a JSON array on SQLite, a
``text[]`` on PostgreSQL; val: the JSON type and value text, both cut to a few hundred characters).
Triggers on ``state_snapshots`` keep it exact whoever writes the rows (saves, restores, retention,
purge): the database computes both the stored keys and the looked-up ones, so equal values always
meet, and ``find`` still compares the candidates' values strictly. A version too big to index (more
than FIND_MAX_TEXT characters of inline JSON or FIND_MAX_NAMES names) gets one ``('*', '*')`` row
instead, and ``find`` always checks those.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy.engine import Connection

from .codecs import dumps

VIEWS = ("statekit_history", "statekit_names")

_HISTORY_SQLITE = """
CREATE VIEW statekit_history AS
SELECT s.entity_id, s.version, s.branch, s.kind, s.parent_version,
  CASE WHEN s.kind = 'merge' THEN json_extract(s.metadata, '$.merged_from.version') END AS merge_parent_version,
  s.created_at, s.actor, s.message, s.names, s.changed,
  (SELECT group_concat(json_extract(t.metadata, '$.tag'), ',') FROM state_transitions t
   WHERE t.entity_id = s.entity_id AND t.to_snapshot_id = s.snapshot_id AND t.transition_type = 'tag') AS tags,
  s.size_bytes, s.new_bytes, s.status, s.expires_at, s.snapshot_id, s.parent_snapshot_id
FROM state_snapshots s
"""

_NAMES_SQLITE = """
CREATE VIEW statekit_names AS
SELECT s.entity_id, s.version, s.branch, n.value AS name,
  EXISTS (SELECT 1 FROM json_each(s.changed) c WHERE c.key = n.value) AS changed,
  (SELECT d.value FROM json_each(s.state_data) d WHERE d.key = n.value) AS value
FROM state_snapshots s, json_each(s.names) n
"""

_HISTORY_PG = """
CREATE VIEW statekit_history AS
SELECT s.entity_id, s.version, s.branch, s.kind, s.parent_version,
  CASE WHEN s.kind = 'merge' THEN (s.metadata::jsonb #>> '{merged_from,version}')::int END AS merge_parent_version,
  s.created_at, s.actor, s.message, s.names, s.changed,
  (SELECT string_agg(t.metadata::jsonb ->> 'tag', ',' ORDER BY t.timestamp) FROM state_transitions t
   WHERE t.entity_id = s.entity_id AND t.to_snapshot_id = s.snapshot_id AND t.transition_type = 'tag') AS tags,
  s.size_bytes, s.new_bytes, s.status, s.expires_at, s.snapshot_id, s.parent_snapshot_id
FROM state_snapshots s
"""

_NAMES_PG = """
CREATE VIEW statekit_names AS
SELECT s.entity_id, s.version, s.branch, n.name,
  COALESCE(jsonb_exists(s.changed::jsonb, n.name), false) AS changed,
  (s.state_data::jsonb -> n.name) AS value
FROM state_snapshots s CROSS JOIN LATERAL json_array_elements_text(s.names) AS n(name)
"""


FIND_MAX_TEXT = 8192
"""Inline JSON longer than this is not indexed (its version is marked, and scanned by find)."""
FIND_MAX_NAMES = 1000
PATH_CHARS, VAL_CHARS = 300, 150
"""Index keys are cut to this many characters (a PostgreSQL index row must stay under 2.7 KB)."""

_FIND_TABLE = """
CREATE TABLE state_find_index (path TEXT NOT NULL, val TEXT NOT NULL, snapshot_id VARCHAR(32) NOT NULL,
  PRIMARY KEY (path, val, snapshot_id)){rowid};
CREATE INDEX ix_state_find_index_snapshot ON state_find_index (snapshot_id)
"""

def _ok_sqlite(d: str, n: str) -> str:
    """SQL: whether a version's inline JSON ``d`` and names ``n`` are indexed (else it gets a '*' row)."""
    return (f"(CASE WHEN length({d}) <= {FIND_MAX_TEXT} AND json_valid({d}) AND json_valid({n}) "
            f"THEN json_type({d}) = 'object' AND json_type({n}) = 'array' "
            f"AND json_array_length({n}) <= {FIND_MAX_NAMES} ELSE 0 END)")


def sqlite_val(t: str, v: str) -> str:
    """SQL: the ``val`` key of a JSON leaf of type ``t`` and value ``v`` (as json_each gives them)."""
    return f"substr({t} || ':' || coalesce({v}, ''), 1, {VAL_CHARS})"


def _sqlite_rows(d: str, n: str, sid: str) -> str:
    """SQL: the index rows of one version (``d``, ``n``, ``sid``: its state_data, names and id, from NEW)."""
    return f"""
WITH RECURSIVE k(ok) AS MATERIALIZED (SELECT {_ok_sqlite(d, n)}),
w(p, v, t) AS (
  SELECT json_array(e.key), e.value, e.type FROM k, json_each(CASE WHEN k.ok THEN {d} ELSE '{{}}' END) e
  UNION ALL
  SELECT json_insert(w.p, '$[#]', e.key), e.value, e.type FROM w, json_each(w.v) e WHERE w.t = 'object')
SELECT substr(p, 1, {PATH_CHARS}), {sqlite_val("t", "v")}, {sid} FROM w WHERE t NOT IN ('object', 'array')
UNION ALL SELECT substr(json_array(x.value), 1, {PATH_CHARS}), 'name:', {sid}
  FROM k, json_each(CASE WHEN k.ok THEN {n} ELSE '[]' END) x
UNION ALL SELECT '*', '*', {sid} FROM k WHERE NOT k.ok
"""


_TRIGGERS_SQLITE = [
    f"""CREATE TRIGGER statekit_find_index_insert AFTER INSERT ON state_snapshots BEGIN
  INSERT OR IGNORE INTO state_find_index (path, val, snapshot_id) SELECT * FROM ({_sqlite_rows(
        "NEW.state_data", "NEW.names", "NEW.snapshot_id")});
END""",
    """CREATE TRIGGER statekit_find_index_delete AFTER DELETE ON state_snapshots BEGIN
  DELETE FROM state_find_index WHERE snapshot_id = OLD.snapshot_id;
END""",
    f"""CREATE TRIGGER statekit_find_index_update AFTER UPDATE OF state_data, names, snapshot_id ON state_snapshots
BEGIN
  DELETE FROM state_find_index WHERE snapshot_id = OLD.snapshot_id;
  INSERT OR IGNORE INTO state_find_index (path, val, snapshot_id) SELECT * FROM ({_sqlite_rows(
        "NEW.state_data", "NEW.names", "NEW.snapshot_id")});
END""",
]



def pg_val(v: str) -> str:
    """SQL: the ``val`` key of a jsonb leaf ``v``."""
    return f"left(jsonb_typeof({v}) || ':' || coalesce({v} #>> '{{}}', ''), {VAL_CHARS})"


_FUNCTION_PG = f"""
CREATE OR REPLACE FUNCTION statekit_find_index_sync() RETURNS trigger LANGUAGE plpgsql
SET search_path FROM CURRENT AS $body$
BEGIN
  IF TG_OP <> 'INSERT' THEN
    DELETE FROM state_find_index WHERE snapshot_id = OLD.snapshot_id;
    IF TG_OP = 'DELETE' THEN RETURN NULL; END IF;
  END IF;
  -- \\u escapes (NUL, lone surrogates) cannot become jsonb: such a version is marked, not indexed
  IF length(NEW.state_data::text) > {FIND_MAX_TEXT} OR strpos(NEW.state_data::text, '\\u') > 0
     OR json_typeof(NEW.state_data) <> 'object' OR json_typeof(NEW.names) <> 'array'
     OR (CASE WHEN json_typeof(NEW.names) = 'array' THEN json_array_length(NEW.names) ELSE 0 END) > {FIND_MAX_NAMES}
  THEN
    INSERT INTO state_find_index VALUES ('*', '*', NEW.snapshot_id) ON CONFLICT DO NOTHING;
    RETURN NULL;
  END IF;
  BEGIN
    INSERT INTO state_find_index (path, val, snapshot_id)
    WITH RECURSIVE w(p, v) AS (
      SELECT ARRAY[e.key], e.value FROM jsonb_each(NEW.state_data::jsonb) e
      UNION ALL SELECT w.p || e.key, e.value FROM w, jsonb_each(w.v) e WHERE jsonb_typeof(w.v) = 'object')
    SELECT left(p::text, {PATH_CHARS}), {pg_val('v')}, NEW.snapshot_id FROM w
      WHERE jsonb_typeof(v) NOT IN ('object', 'array')
    UNION ALL SELECT left(ARRAY[x]::text, {PATH_CHARS}), 'name:', NEW.snapshot_id FROM json_array_elements_text(NEW.names) x
    ON CONFLICT DO NOTHING;
  EXCEPTION WHEN others THEN  -- a value jsonb refuses: the version is scanned instead, the save goes on
    INSERT INTO state_find_index VALUES ('*', '*', NEW.snapshot_id) ON CONFLICT DO NOTHING;
  END;
  RETURN NULL;
END
$body$
"""
_TRIGGER_PG = """CREATE TRIGGER statekit_find_index AFTER INSERT OR DELETE OR UPDATE OF state_data, names, snapshot_id
ON state_snapshots FOR EACH ROW EXECUTE FUNCTION statekit_find_index_sync()"""


def create_find_index(conn: Connection) -> None:
    """The ``state_find_index`` table, its triggers, and its rows for the versions already stored."""
    postgres = conn.dialect.name == "postgresql"
    # built from scratch each time (like the views): a half-made index would give wrong answers
    for trigger in ("statekit_find_index", "statekit_find_index_insert", "statekit_find_index_delete",
                    "statekit_find_index_update"):
        conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {trigger}" + (" ON state_snapshots" if postgres else ""))
    conn.exec_driver_sql("DROP TABLE IF EXISTS state_find_index")
    for stmt in _FIND_TABLE.format(rowid="" if postgres else " WITHOUT ROWID").split(";"):
        conn.exec_driver_sql(stmt)
    if postgres:
        conn.exec_driver_sql(_FUNCTION_PG)
        conn.exec_driver_sql(_TRIGGER_PG)
    else:
        for stmt in _TRIGGERS_SQLITE:
            conn.exec_driver_sql(stmt)
    # the update trigger indexes each row an UPDATE of ``names`` touches: the versions already stored
    conn.exec_driver_sql("UPDATE state_snapshots SET names = names")


def create_views(conn: Connection) -> None:
    """(Re)create the history views."""
    postgres = conn.dialect.name == "postgresql"
    for name in VIEWS:
        conn.exec_driver_sql(f"DROP VIEW IF EXISTS {name}")
    for sql in ((_HISTORY_PG, _NAMES_PG) if postgres else (_HISTORY_SQLITE, _NAMES_SQLITE)):
        conn.exec_driver_sql(sql)


def upgrade(conn: Connection) -> None:
    """Schema 2 -> 3: add ``changed`` and ``lineage``, compute ``changed`` for every version, create the views
    and the find index."""
    for column in ("changed", "lineage"):
        conn.exec_driver_sql(f"ALTER TABLE state_snapshots ADD COLUMN {column} JSON")
    backfill(conn)
    create_views(conn)
    create_find_index(conn)


def _obj(text: Any) -> dict[str, Any]:
    try:
        value = json.loads(text) if isinstance(text, (str, bytes)) else text
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def backfill(conn: Connection) -> None:
    """Fill ``changed`` for every snapshot that lacks it, in keyset pages (flat memory)."""
    from .changes import changed

    postgres = conn.dialect.name == "postgresql"
    cur = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    mark = "%s" if postgres else "?"
    cols = "state_data::text, items::text" if postgres else "state_data, items"
    after = ""
    while True:
        cur.execute(f"SELECT snapshot_id, parent_snapshot_id, {cols} FROM state_snapshots WHERE snapshot_id > {mark} "
                    f"AND changed IS NULL ORDER BY snapshot_id LIMIT 200", (after,))
        rows = cur.fetchall()
        if not rows:
            return
        parents: dict[str, tuple[Any, Any]] = {}
        wanted = sorted({r[1] for r in rows if r[1]})
        if wanted:
            cur.execute(f"SELECT snapshot_id, {cols} FROM state_snapshots WHERE snapshot_id IN "
                        f"({', '.join([mark] * len(wanted))})", tuple(wanted))
            parents = {p[0]: (p[1], p[2]) for p in cur.fetchall()}
        updates = []
        for sid, parent, data, items in rows:
            pd_, pi = parents.get(parent, ("{}", "{}")) if parent else ("{}", "{}")
            updates.append((dumps(changed(_obj(pd_), _obj(pi), _obj(data), _obj(items))), sid))
        cur.executemany(f"UPDATE state_snapshots SET changed = {mark} WHERE snapshot_id = {mark}", updates)
        after = rows[-1][0]
