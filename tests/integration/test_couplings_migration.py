"""Couplings schema 5 (integer key ids) from a schema-3/4 index: migrated in place by a writable open (SQLite
and PostgreSQL), safe against a SIGKILL mid-way, and read as it is by a read-only open.

The old files are written here with the old DDL, as an older scenemind left them (scene ids and key texts
in scene_key, a key index, a removal or two). Each is compared with a fresh schema-5 index of the same
scenes: positions, every scene's entities in order (key text order, which bridge probes break ties by),
BM25 and spreading scores, moments.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from adapters.coupling_index import SCHEMA_VERSION, CouplingIndex, SceneRow
from adapters.lexicon import scene_keys, terms_of
from scenemind_data import DEMO_QUESTION, DEMO_SCENES

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]

OLD_TABLES = """
CREATE TABLE scene (n {serial} PRIMARY KEY{auto}, id TEXT NOT NULL UNIQUE, title TEXT);
CREATE TABLE scene_key (scene_id TEXT NOT NULL, key TEXT NOT NULL, tf INTEGER NOT NULL DEFAULT 1,
                        PRIMARY KEY (scene_id, key));
CREATE INDEX scene_key_by_key ON scene_key (key);
CREATE TABLE moments (id INTEGER PRIMARY KEY CHECK (id = 1), count BIGINT, dim INTEGER, total {blob}, "outer" {blob});
"""
OLD_REMOVALS = """
CREATE TABLE removing (id TEXT PRIMARY KEY, vector {blob});
CREATE TABLE removed (seq {serial} PRIMARY KEY{auto}, id TEXT NOT NULL);
"""
GONE = ("s3", "s10", "s41")
QUERIES = [DEMO_QUESTION, "Where was the director of the film Gaby: A True Story born, in Mexico City?",
           "Which film was released first?"]


@pytest.fixture(scope="module")
def scenes() -> list[tuple[str, str | None, dict[str, int], np.ndarray]]:
    recs = [json.loads(line) for line in DEMO_SCENES.read_text(encoding="utf-8").splitlines() if line.strip()]
    rng = np.random.default_rng(7)
    vecs = rng.normal(size=(len(recs[:90]), 8))
    return [(f"s{i}", r.get("title"), scene_keys(r["text"], r.get("title")), v / np.linalg.norm(v))
            for i, (r, v) in enumerate(zip(recs[:90], vecs))]


def held(scenes) -> list:
    """The scenes an old index holds, in the order it numbered them."""
    return [s for s in scenes if s[0] not in GONE]


def write_old(db, scenes, version: int, postgres: bool = False) -> None:
    """An index as schema `version` wrote it: scenes 0-59, three removed, then 60-89 (numbers have gaps)."""
    words = {"serial": "BIGSERIAL" if postgres else "INTEGER", "auto": "" if postgres else " AUTOINCREMENT",
             "blob": "BYTEA" if postgres else "BLOB"}
    script = OLD_TABLES + (OLD_REMOVALS if version >= 4 else "")
    mark = "%s" if postgres else "?"
    for statement in filter(str.strip, script.format(**words).split(";")):
        db.execute(statement)
    if postgres:
        db.execute("CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
        db.execute(f"INSERT INTO meta VALUES ('schema', {mark})", (str(version),))
    for first, part in enumerate((scenes[:60], scenes[60:])):
        for sid, title, keys, _ in part:
            db.execute(f"INSERT INTO scene (id, title) VALUES ({mark}, {mark})", (sid, title))
            for key, tf in keys.items():
                db.execute(f"INSERT INTO scene_key VALUES ({mark}, {mark}, {mark})", (sid, key, tf))
        if first == 0:
            for sid in GONE:
                db.execute(f"DELETE FROM scene_key WHERE scene_id = {mark}", (sid,))
                db.execute(f"DELETE FROM scene WHERE id = {mark}", (sid,))
                if version >= 4:
                    db.execute(f"INSERT INTO removed (id) VALUES ({mark})", (sid,))
    vectors = np.stack([s[3] for s in held(scenes)])
    db.execute(f"INSERT INTO moments VALUES (1, {mark}, {mark}, {mark}, {mark})",
               (len(vectors), vectors.shape[1], vectors.sum(0).tobytes(), (vectors.T @ vectors).tobytes()))


def old_file(path: Path, scenes, version: int = 4) -> Path:
    db = sqlite3.connect(str(path))
    db.execute("PRAGMA journal_mode=WAL")
    with db:
        write_old(db, scenes, version)
    db.execute(f"PRAGMA user_version = {version}")
    db.close()
    return path


def fresh_index(path: Path, scenes) -> CouplingIndex:
    """A schema-5 index of `scenes` as given, ingested 10 at a time (so key ids do not follow key text order)."""
    index = CouplingIndex(path)
    for start in range(0, len(scenes), 10):
        index.add(SceneRow(sid, title, keys, vec) for sid, title, keys, vec in scenes[start : start + 10])
    return index


def signature(index: CouplingIndex) -> dict:
    """What queries see of an index's graph, by scene id."""
    g = index.graph()
    out = {"ids": [sid for sid in g.ids if sid is not None], "n": g.n, "count": index.count(),
           "entities": {sid: g.entities_of(pos) for sid, pos in g.position.items()},
           "mean": np.round(g.mean, 12).tolist()}
    for n, question in enumerate(QUERIES):
        scores = g.bm25(terms_of(question))
        out[f"bm25 {n}"] = {sid: round(float(scores[pos]), 12) for sid, pos in g.position.items()}
    spread = g.spread({g.position["s5"]: 1.0}, g.query_entities(QUERIES[1]), 0.3, 10)
    out["spread"] = {sid: round(float(spread[pos]), 12) for sid, pos in g.position.items()}
    return out


def text_order(scenes) -> dict[str, list[str]]:
    """Each scene's entities in key text order: how the text form was read (`ORDER BY scene_id, key`)."""
    return {sid: [k[2:] for k in sorted(keys) if k.startswith("e:")] for sid, _, keys, _ in held(scenes)}


def assert_migrated(path: Path) -> None:
    db = sqlite3.connect(str(path))
    try:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 5
        assert [c[1] for c in db.execute("PRAGMA table_info(scene_key)")] == ["scene", "key", "tf"]
        assert not db.execute("SELECT 1 FROM sqlite_master WHERE name = 'scene_key_by_key'").fetchone()
        assert not db.execute("SELECT 1 FROM sqlite_master WHERE name = 'scene_key_ids'").fetchone()
    finally:
        db.close()


@pytest.mark.parametrize("version", [3, 4])
def test_an_old_index_migrates_to_the_graph_a_fresh_one_gives(tmp_path, scenes, version):
    want = signature(fresh_index(tmp_path / "fresh.sqlite", held(scenes)))
    assert want["entities"] == text_order(scenes)
    path = old_file(tmp_path / "couplings.sqlite", scenes, version)
    migrated = CouplingIndex(path, writable=True)
    assert_migrated(path)
    assert signature(migrated) == want
    # and it goes on as a schema-5 index: removals, adds, a second process's catch-up
    other = CouplingIndex(path, writable=False)
    other.graph()
    vec = {s[0]: s[3] for s in scenes}
    migrated.journal_removal({"s20": vec["s20"]})
    migrated.remove(["s20"])
    back = [s for s in scenes if s[0] in GONE]
    migrated.add(SceneRow(sid, title, keys, v) for sid, title, keys, v in back)
    again = fresh_index(tmp_path / "again.sqlite", [s for s in held(scenes) if s[0] != "s20"] + back)
    assert signature(other)["entities"] == signature(again)["entities"]
    assert signature(other)["bm25 1"] == signature(again)["bm25 1"]


KILL = """
import os, signal, sys, tqdm
import adapters.coupling_index as ci
ci.MIGRATE_BLOCK = 7
calls, update = [0], tqdm.tqdm.update
def killing(self, n=1):
    calls[0] += 1
    if calls[0] == 4:  # three blocks converted inside the migration's transaction
        os.kill(os.getpid(), signal.SIGKILL)
    return update(self, n)
tqdm.tqdm.update = killing
ci.CouplingIndex(sys.argv[1], writable=True)
print("not killed")
"""


def test_a_migration_killed_half_way_is_finished_by_a_rerun(tmp_path, scenes):
    path = old_file(tmp_path / "couplings.sqlite", scenes)
    proc = subprocess.run([sys.executable, "-c", KILL, str(path)], capture_output=True, text=True, timeout=120,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == -9, proc.stdout + proc.stderr[-2000:]
    assert "migrating" in proc.stderr
    db = sqlite3.connect(str(path))
    assert db.execute("PRAGMA user_version").fetchone()[0] == 4  # the old index, whole
    assert db.execute("SELECT COUNT(*) FROM scene_key").fetchone()[0] == sum(len(s[2]) for s in held(scenes))
    db.close()
    rerun = CouplingIndex(path, writable=True)
    assert_migrated(path)
    assert signature(rerun) == signature(fresh_index(tmp_path / "fresh.sqlite", held(scenes)))


def test_a_read_only_open_reads_an_old_index_as_it_is_and_follows_its_migration(tmp_path, scenes):
    path = old_file(tmp_path / "couplings.sqlite", scenes)
    want = signature(fresh_index(tmp_path / "fresh.sqlite", held(scenes)))
    before = path.read_bytes()
    reader = CouplingIndex(path, writable=False)
    assert signature(reader) == want
    assert path.read_bytes() == before  # nothing written: a reader may not have the right to
    # Another process migrates it and adds scenes; the reader's next catch-up reads the new form.
    writer = CouplingIndex(path, writable=True)
    assert_migrated(path)
    extra = [(f"x{i}", title, keys, vec) for i, (_, title, keys, vec) in enumerate(scenes[:5])]
    writer.add(SceneRow(*s) for s in extra)
    later = signature(fresh_index(tmp_path / "later.sqlite", held(scenes) + extra))
    assert signature(reader) == later


READ = """
import json, sys
from adapters.coupling_index import CouplingIndex
g = CouplingIndex(sys.argv[1], writable=False).graph()
print(json.dumps({sid: g.entities_of(pos) for sid, pos in g.position.items()}))
"""


def test_an_old_index_in_a_read_only_folder_answers(tmp_path, scenes):
    folder = tmp_path / "ro"
    folder.mkdir()
    path = old_file(folder / "couplings.sqlite", scenes)
    sqlite3.connect(str(path)).execute("PRAGMA wal_checkpoint(TRUNCATE)").close()
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode:
        pytest.skip("no private mount namespace here (unshare -m)")
    script = (f"mount --bind {folder} {folder} && mount -o remount,bind,ro {folder} || exit 77; "
              f"{sys.executable} -c '{READ}' {path}")
    proc = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=120,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    if proc.returncode == 77:
        pytest.skip(f"a read-only bind mount could not be made: {proc.stderr[-300:]}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout) == text_order(scenes)


def test_postgres_migrates_an_old_index_under_its_setup_lock(tmp_path, scenes, pg_url):
    import psycopg

    with psycopg.connect(pg_url) as conn:
        write_old(conn, scenes, 4, postgres=True)
    migrated = CouplingIndex(tmp_path / "unused.sqlite", url=pg_url)
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT value FROM meta WHERE name = 'schema'").fetchone()[0] == str(SCHEMA_VERSION)
        columns = [r[0] for r in conn.execute("SELECT column_name FROM information_schema.columns WHERE "
                                              "table_name = 'scene_key' ORDER BY ordinal_position")]
        assert columns == ["scene", "key", "tf"]
    assert signature(migrated) == signature(fresh_index(tmp_path / "fresh.sqlite", held(scenes)))
    assert signature(CouplingIndex(tmp_path / "unused.sqlite", url=pg_url))["entities"] == text_order(scenes)
