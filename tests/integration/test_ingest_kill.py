"""An ingest killed with SIGKILL half-way, then rerun, ends exactly like a clean run.

Nothing lost, nothing doubled: the scene ids in Chroma and the (scene, key) rows
of the couplings index are compared set for set with a clean ingest of the
same file. The input is generated from the bundled demo corpus (no outside
data): 600 distinct short scenes, three ingest batches, so the test stays
quick on two cores.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest

from adapters.memory import INGEST_BATCH, Memory
from adapters.sources import read_sources
from scenemind_data import DEMO_SCENES

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # real servers / processes: `-m "not slow"` skips them

SCENEMIND = str(Path(sys.executable).with_name("scenemind"))
# Kill safety does not depend on the embedder: the fastest one keeps this 1,800-embedding test short.
KILL_EMBEDDER = "all-MiniLM-L6-v2"
COPIES = 3  # 300 demo passages x 3 = 900 distinct scenes: ingest batches of 512 and 388
TEXT_CHARS = 80


@pytest.fixture(scope="module")
def scenes_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("kill_input") / "scenes.jsonl"
    demo = [json.loads(line) for line in DEMO_SCENES.read_text(encoding="utf-8").splitlines() if line.strip()]
    with path.open("w", encoding="utf-8") as out:
        for n in range(1, COPIES + 1):
            for rec in demo:
                text = f"{rec['text'][:TEXT_CHARS].strip()} (copy {n})"
                out.write(json.dumps({"title": rec["title"], "text": text, "meta": rec.get("meta", {})}) + "\n")
    return path


def _ingest(data_dir: Path, scenes: Path) -> subprocess.Popen:
    return subprocess.Popen([SCENEMIND, "--data-dir", str(data_dir), "--embedder", KILL_EMBEDDER, "ingest", str(scenes),
                             "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _indexed_scenes(data_dir: Path) -> int:
    db_path = data_dir / "couplings.sqlite"
    if not db_path.exists():
        return 0
    try:
        with closing(sqlite3.connect(str(db_path), timeout=5)) as db:
            return db.execute("SELECT COUNT(*) FROM scene").fetchone()[0]
    except sqlite3.OperationalError:  # the schema is not written yet
        return 0


def _couplings(data_dir: Path) -> tuple[set[str], set[tuple[str, str]]]:
    db = sqlite3.connect(str(data_dir / "couplings.sqlite"))
    try:
        scenes = {r[0] for r in db.execute("SELECT id FROM scene")}
        keys = set(db.execute("SELECT s.id, k.name FROM scene_key sk JOIN scene s ON s.n = sk.scene JOIN key_name k ON k.id = sk.key").fetchall())
        # A primary key forbids doubles already; check the raw row count anyway.
        assert db.execute("SELECT COUNT(*) FROM scene_key").fetchone()[0] == len(keys)
    finally:
        db.close()
    return scenes, keys


def _chroma_ids(data_dir: Path) -> list[str]:
    """All scene ids in the embedded store (open it in this process only once no one writes to it any more)."""
    import chromadb
    from chromadb.config import Settings

    client = chromadb.PersistentClient(path=str(data_dir / "chroma"), settings=Settings(anonymized_telemetry=False))
    return list(client.get_collection("scenemind_scenes", embedding_function=None).get(include=[])["ids"])


def _chroma_ids_elsewhere(data_dir: Path) -> list[str]:
    """The same, read in a child process, so that this process caches no Chroma client for a store still in use."""
    code = ("import json, sys, chromadb; from chromadb.config import Settings; "
            "c = chromadb.PersistentClient(path=sys.argv[1], settings=Settings(anonymized_telemetry=False)); "
            "print(json.dumps(c.get_collection('scenemind_scenes', embedding_function=None).get(include=[])['ids']))")
    out = subprocess.run([sys.executable, "-c", code, str(data_dir / "chroma")], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def minilm():
    from adapters.embedder import load_embedder

    return load_embedder(KILL_EMBEDDER)


def test_killed_ingest_rerun_matches_clean_run(tmp_path, scenes_file, minilm):
    expected = {rec.scene_id for rec in read_sources([str(scenes_file)])}
    assert len(expected) == 300 * COPIES
    killed_dir, clean_dir = tmp_path / "killed", tmp_path / "clean"

    # 1. Start an ingest and SIGKILL it once some, but not all, batches are in.
    proc = _ingest(killed_dir, scenes_file)
    deadline = time.monotonic() + 180
    try:
        while True:
            done = _indexed_scenes(killed_dir)
            if done >= INGEST_BATCH:
                os.kill(proc.pid, signal.SIGKILL)
                break
            assert proc.poll() is None, f"ingest ended before it could be killed: {proc.communicate()}"
            assert time.monotonic() < deadline, "ingest made no progress"
            time.sleep(0.01)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    partial_index, _ = _couplings(killed_dir)
    partial_store = set(_chroma_ids_elsewhere(killed_dir))
    assert INGEST_BATCH <= len(partial_index) < len(expected), "the kill must leave a partial store"
    assert len(partial_store) < len(expected)
    # Couplings are written only after their vectors: every indexed scene has its vector.
    assert partial_index <= partial_store <= expected

    # 2. Rerun the CLI to completion: it writes only what the killed run left unfinished.
    rerun = _ingest(killed_dir, scenes_file)
    out, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    assert f"{len(expected) - len(partial_index)} added, {len(partial_index)} already present" in out

    # 3. A clean run into a second dir (in this process, with the same embedder).
    clean = Memory(str(clean_dir), minilm, create=True).ingest(read_sources([str(scenes_file)]))
    assert (clean.added, clean.already_present, clean.scenes) == (len(expected), 0, len(expected))

    # 4. Same scenes and couplings, each exactly once.
    killed_ids, clean_ids = _chroma_ids(killed_dir), _chroma_ids(clean_dir)
    assert len(killed_ids) == len(set(killed_ids)) == len(expected)
    assert set(killed_ids) == set(clean_ids) == expected
    killed_scenes, killed_keys = _couplings(killed_dir)
    clean_scenes, clean_keys = _couplings(clean_dir)
    assert killed_scenes == clean_scenes == expected
    assert killed_keys == clean_keys
    assert {sid for sid, _ in killed_keys} == expected  # every scene got its keys

    # Another run over the healed store adds nothing.
    again_mem = Memory(str(killed_dir), minilm)
    again = again_mem.ingest(read_sources([str(scenes_file)]))
    assert (again.added, again.already_present, again.scenes) == (0, len(expected), len(expected))
    assert again.couplings == len(clean_keys)
    # The vector index survived the kill: a scene from the first (pre-kill) batch and one written
    # by the rerun are each their own nearest neighbour.
    store = again_mem.scenes([sorted(partial_index)[0], sorted(expected - partial_store)[0]])
    assert len(store) == 2
    for sid, item in store.items():
        assert again_mem.dense(item.vector[None, :], k=1)[0][0].id == sid
