"""Schema 3: history as data. The migration from schema 2, and the SQL views over the history.

Two views let any SQL tool read the history without decoding payloads (both backends):

- ``statekit_history``: one row per version: entity_id, version, branch, kind (create, update,
  rollback, merge...), parent_version, merge_parent_version (the second parent of a merge),
  created_at, actor, message, names and changed (JSON), tags (comma-separated), size_bytes,
  new_bytes, status, expires_at, snapshot_id, parent_snapshot_id.
- ``statekit_names``: one row per version and name it holds: entity_id, version, branch, name,
  changed (whether that version changed it) and value (the JSON of an inline value, else NULL).

The audit trail is the ``state_transitions`` table itself.
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


def create_views(conn: Connection) -> None:
    """(Re)create the history views."""
    postgres = conn.dialect.name == "postgresql"
    for name in VIEWS:
        conn.exec_driver_sql(f"DROP VIEW IF EXISTS {name}")
    for sql in ((_HISTORY_PG, _NAMES_PG) if postgres else (_HISTORY_SQLITE, _NAMES_SQLITE)):
        conn.exec_driver_sql(sql)


def upgrade(conn: Connection) -> None:
    """Schema 2 -> 3: add ``changed`` and ``lineage``, compute ``changed`` for every version, create the views."""
    for column in ("changed", "lineage"):
        conn.exec_driver_sql(f"ALTER TABLE state_snapshots ADD COLUMN {column} JSON")
    backfill(conn)
    create_views(conn)


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
