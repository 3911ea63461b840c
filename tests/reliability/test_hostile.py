"""Loading never runs code that someone else wrote, and the secrets on disk are the owner's alone.

The attacker (``attacker.py``, its own ``STATEKIT_KEY``) shares the store and
saves a value whose unpickling calls ``os.mkdir(MARKER)``. With the
attacker's key, loading it does create the marker (the positive control: the
payload is live). With the victim's key it must be refused before
unpickling, on every read path: ``load`` (head, by version, by name),
``get().state``, ``load_many``, ``diff``, the panel (its diff and its Load),
the magics (``%state load``, ``%state diff``, ``%state checkout``) and the
command (``statekit show``, ``statekit diff``). A second hostile version
goes further, with plain SQL: no signature at all and the victim's key id
written in, the checksum recomputed so it looks whole. The marker must never
appear.

Payloads that need no pickle are tried too: a ``.npy`` payload whose header
declares an object array (numpy would unpickle it) and an Arrow payload that
declares a pickled extension type. Neither may run code, and each must come
back as a value or a StatekitError.

Files: the SQLite store (and its WAL and shared-memory files) and the key
file are created readable by their owner only (0600, folders 0700), even
under ``umask 0``; a key file that others can read is refused.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import sqlalchemy as sa

from statekit import StatekitError, StateManager, UntrustedPayloadError
from statekit.codecs import digest_of, dumps
from statekit.repository import state_checksum
from statekit.signing import SigningKey

from .figures import record

pytestmark = pytest.mark.reliability

HERE = Path(__file__).parent
ENTITY = "shared"
ATTACKER_KEY = "mallory-" + "k" * 40


class Payload:
    """Pickles as ``os.mkdir(marker)`` (the same trick as attacker.py, for forged payloads)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.mkdir, (self.marker,))


def attacker(mode: str, url: str, marker: Path, tmp_path: Path, *extra: str) -> str:
    env = {**os.environ, "STATEKIT_KEY": ATTACKER_KEY, "STATEKIT_KEY_FILE": str(tmp_path / "mallory" / "key")}
    done = subprocess.run([sys.executable, str(HERE / "attacker.py"), mode, url, ENTITY, str(marker), *extra],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def run_sql(sm: StateManager, sql: str, **params: Any) -> list[Any]:
    with sm.db.engine.begin() as conn:
        result = conn.execute(sa.text(sql), params)
        return result.all() if result.returns_rows else []


def forge_item(sm: StateManager, version: int, name: str, descriptor: dict[str, Any],
               chunks: dict[str, bytes]) -> str:
    """Write ``name`` into ``version`` as someone with write access but no key can: new chunks, links,
    descriptor, and a recomputed checksum (sha256 is public), so the snapshot looks whole."""
    sid, state_text, items_text, names_text = run_sql(
        sm, "SELECT snapshot_id, CAST(state_data AS TEXT), CAST(items AS TEXT), CAST(names AS TEXT) "
            "FROM state_snapshots WHERE entity_id = :e AND version = :v", e=ENTITY, v=version)[0]
    items = json.loads(items_text)
    items[name] = descriptor
    new_items = dumps(items)
    names = json.loads(names_text)
    if name not in names:
        names.append(name)
    as_json = "CAST(:j AS JSON)" if not sm.db.is_sqlite else ":j"
    with sm.db.engine.begin() as conn:
        for d, data in chunks.items():
            if not conn.execute(sa.text("SELECT 1 FROM state_payloads WHERE digest = :d"), {"d": d}).first():
                conn.execute(sa.text("INSERT INTO state_payloads (digest, size, data) VALUES (:d, :n, :b)"),
                             {"d": d, "n": len(data), "b": data})
            conn.execute(sa.text("INSERT INTO state_snapshot_payloads (snapshot_id, digest) VALUES (:s, :d)"),
                         {"s": sid, "d": d})
        conn.execute(sa.text(f"UPDATE state_snapshots SET items = {as_json}, checksum = :c WHERE snapshot_id = :s"),
                     {"j": new_items, "c": state_checksum(state_text, new_items), "s": sid})
        conn.execute(sa.text(f"UPDATE state_snapshots SET names = {as_json} WHERE snapshot_id = :s"),
                     {"j": dumps(names), "s": sid})
    return sid


def make_shell(url: str) -> Any:
    from tests import shells

    return shells.make_shell(url, ENTITY)


def cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "statekit", "--url", url, *args],
                          capture_output=True, text=True, timeout=120)


def test_a_pickle_from_someone_without_my_key_is_refused_on_every_read_path(store_url: str, tmp_path: Path) -> None:
    from IPython.core.error import UsageError

    from statekit.panels import panel

    marker = tmp_path / "PWNED"
    with StateManager(store_url) as mine:
        mine.save(ENTITY, {"x": 1, "note": "mine"}, actor="victim")  # v1
    assert attacker("save", store_url, marker, tmp_path) == "2"
    assert attacker("save", store_url, marker, tmp_path) == "3"
    # positive control: with the attacker's key the payload is trusted, unpickled, and runs
    assert attacker("load", store_url, marker, tmp_path, "2") == "loaded"
    assert marker.exists(), "the hostile payload does not run code even when trusted: the test shows nothing"
    marker.rmdir()
    # v3: signature removed and the victim's key id written in, checksum recomputed (plain SQL)
    with StateManager(store_url) as sm:
        row = run_sql(sm, "SELECT CAST(items AS TEXT) FROM state_snapshots WHERE entity_id = :e AND version = 3",
                      e=ENTITY)[0][0]
        desc = json.loads(row)["evil"]
        desc.pop("hmac")
        desc["key_id"] = SigningKey.load().key_id
        forge_item(sm, 3, "evil", desc, {})

    refusals: list[str] = []

    def refused(what: str, fn: Any, exc: type[BaseException] = UntrustedPayloadError) -> None:
        with pytest.raises(exc) as caught:
            fn()
        assert "sign" in str(caught.value), f"{what}: {caught.value}"
        assert not marker.exists(), f"{what} ran the attacker's code"
        refusals.append(what)

    sm = StateManager(store_url, cache_size=0)
    try:
        for v in (2, 3):
            refused(f"load(v{v})", lambda v=v: sm.load(ENTITY, v))
            refused(f"load(v{v}, names=['evil'])", lambda v=v: sm.load(ENTITY, v, names=["evil"]))
            refused(f"get(v{v}).state", lambda v=v: sm.get(ENTITY, v).state)
            refused(f"diff(1, {v})", lambda v=v: sm.diff(ENTITY, 1, v))
        refused("load(head)", lambda: sm.load(ENTITY))
        refused("load_many", lambda: sm.load_many([ENTITY]))
        refused("diff(head)", lambda: sm.diff(ENTITY))
        assert sm.load(ENTITY, 1) == {"x": 1, "note": "mine"}  # my own version is fine

        p = panel(sm, ENTITY)
        try:
            p.select(1, 2)
            assert p.diff_frame is None and "sign" in p.status.value, p.status.value
            assert not marker.exists(), "the panel's diff ran the attacker's code"
            refusals.append("panel diff")
            refused("panel Load", lambda: p.load(3))
        finally:
            p.close()
    finally:
        sm.close()

    shell = make_shell(store_url)
    for line in ("load", "load 2", "load 3 evil", "diff 1 2", "diff", "checkout 2"):
        refused(f"%state {line}", lambda line=line: shell.run_line_magic("state", line), UsageError)
        assert "evil" not in shell.user_ns
    shell.run_line_magic("state", "load 1")
    assert shell.user_ns["x"] == 1 and "evil" not in shell.user_ns
    shell.magics_manager.registry["StateMagics"].close()

    for args in (("show", ENTITY, "2"), ("show", ENTITY), ("--json", "show", ENTITY, "3"), ("diff", ENTITY, "1", "2")):
        if args[0] == "--json":
            done = subprocess.run([sys.executable, "-m", "statekit", "--json", "--url", store_url, *args[1:]],
                                  capture_output=True, text=True, timeout=120)
        else:
            done = cli(store_url, *args)
        what = "statekit " + " ".join(args)
        assert done.returncode == 3, f"{what}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
        assert "sign" in done.stderr and "Traceback" not in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert not marker.exists(), f"{what} ran the attacker's code"
        refusals.append(what)

    with StateManager(store_url) as sm:
        sm.verify()
    assert not marker.exists()
    backend = "sqlite" if store_url.startswith("sqlite") else "postgres"
    record(f"hostile_pickle[{backend}]", read_paths_tried=len(refusals), refused_before_unpickling=len(refusals),
           code_ran=0, positive_control_ran_code=True, paths=refusals)


def forged_npy(marker: Path) -> tuple[dict[str, Any], dict[str, bytes]]:
    buf = io.BytesIO()
    np.save(buf, np.array([Payload(marker)], dtype=object), allow_pickle=True)
    data = buf.getvalue()
    return {"codec": "npy", "chunks": [digest_of(data)], "size": len(data)}, {digest_of(data): data}


def forged_arrow(marker: Path) -> tuple[dict[str, Any], dict[str, bytes]]:
    """An Arrow payload whose field declares the pickled ``arrow.py_extension_type``."""
    meta = {b"ARROW:extension:name": b"arrow.py_extension_type",
            b"ARROW:extension:metadata": pickle.dumps(Payload(marker))}
    fld = pa.field("x", pa.binary(), metadata=meta)
    schema = pa.schema([fld], metadata={b"ARROW:extension:name": b"arrow.py_extension_type"})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, schema) as writer:
        writer.write_batch(pa.record_batch([pa.array([b"a"])], schema=schema))
    column = sink.getvalue().to_pybytes()
    schema_bytes = schema.serialize().to_pybytes()
    chunks = {digest_of(schema_bytes): schema_bytes, digest_of(column): column}
    desc = {"codec": "arrow", "kind": "frame", "rows": 1, "schema": digest_of(schema_bytes),
            "columns": [[digest_of(column)]], "fixups": {}, "strings": {}, "placeholder": None,
            "chunks": list(chunks), "size": len(column)}
    return desc, chunks


@pytest.mark.parametrize("forge", [forged_npy, forged_arrow], ids=["npy_object_array", "arrow_pickled_extension"])
def test_payloads_that_need_no_pickle_cannot_smuggle_one(store_url: str, tmp_path: Path, forge: Any) -> None:
    marker = tmp_path / "PWNED"
    with StateManager(store_url) as sm:
        sm.save(ENTITY, {"x": 1, "df": pd.DataFrame({"a": [1, 2]})})
        desc, chunks = forge(marker)
        forge_item(sm, 1, "evil", desc, chunks)
    with StateManager(store_url, cache_size=0) as sm:
        outcome = "value"
        try:
            value = sm.load(ENTITY)["evil"]
        except Exception as exc:  # noqa: BLE001 - checked below
            outcome = f"{type(exc).__module__}.{type(exc).__name__}: {exc}"
            error: Exception | None = exc
        else:
            error = None
        assert not marker.exists(), "loading ran code from a payload that needs no pickle"
        if error is None:
            assert not isinstance(value, Payload)
        record("hostile_no_pickle", merge=True, **{f"{forge.__name__}[{sm.db.dialect}]": outcome[:160]})
        assert error is None or isinstance(error, StatekitError), (
            f"a forged payload gave {outcome}; it should be a value or a StatekitError")


def test_the_store_file_and_the_key_file_are_readable_by_their_owner_only(tmp_path: Path) -> None:
    key = Path(os.environ["STATEKIT_KEY_FILE"])
    paths = [".statekit/state.db", ".statekit/state.db-wal", ".statekit/state.db-shm", ".statekit",
             str(key), str(key.parent)]
    script = (
        "import json, os, stat, sys, fractions\n"
        "os.umask(0)\n"  # the worst case: nothing masks the permissions the code asks for
        "from statekit import StateManager\n"
        "sm = StateManager()\n"
        "sm.save('e', {'f': fractions.Fraction(1, 3)}, allow_pickle=True)\n"  # needs the key: creates it
        "assert sm.load('e') == {'f': fractions.Fraction(1, 3)}\n"
        # while the store is open, so that SQLite's -wal and -shm files exist too
        "print(json.dumps({p: oct(stat.S_IMODE(os.stat(p).st_mode)) for p in sys.argv[1:]}))\n"
        "sm.close()\n"
    )
    done = subprocess.run([sys.executable, "-c", script, *paths], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    modes = json.loads(done.stdout)
    want = {p: oct(0o700 if p in (".statekit", str(key.parent)) else 0o600) for p in paths}
    record("file_modes", umask="0", **{Path(p).name if p.startswith("/") else p: m for p, m in modes.items()})
    assert modes == want


def test_a_key_file_that_others_can_read_is_refused(sqlite_url: str) -> None:
    import fractions

    with StateManager(sqlite_url) as sm:
        sm.save("e", {"f": fractions.Fraction(1, 3)}, allow_pickle=True)
    key = Path(os.environ["STATEKIT_KEY_FILE"])
    key.chmod(0o644)
    with StateManager(sqlite_url, cache_size=0) as sm:
        with pytest.raises(StatekitError, match="chmod 600"):
            sm.load("e")
        with pytest.raises(StatekitError, match="chmod 600"):
            sm.save("e", {"f": fractions.Fraction(2, 3)}, allow_pickle=True)
        assert sm.head_version("e") == 1
