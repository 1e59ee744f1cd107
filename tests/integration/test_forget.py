"""Replace and forget: a source ingested again replaces its scenes; forgotten scenes are gone from everything.

Small stores of demo passages (real Chroma, real embedder). The kill cases run the CLI with
SCENEMIND_TEST_KILL_AT set to a named step of the change, which SIGKILLs the process there
(between two durable writes); the same command is then rerun and the whole state (every
collection's items and metadata, every couplings row, the vector moments) must equal a
clean run of that command on a copy of the same store.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest

from adapters.memory import KILL_AT, POSITION_KEY, SOURCE_KEY, Memory
from adapters.scene_store import KINDS
from adapters.sources import SceneRecord, read_sources
from scenemind_data import DEMO_QUESTION, DEMO_SCENES
from state.errors import StoreBusy

pytestmark = pytest.mark.integration

SCENEMIND = str(Path(sys.executable).with_name("scenemind"))
DEMO = [json.loads(line) for line in DEMO_SCENES.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_jsonl(path: Path, recs: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in recs), encoding="utf-8")
    return path


class CountingEmbedder:
    """The session's embedder, counting the passages it embeds (the fingerprint's two texts included)."""

    def __init__(self, inner):
        self.inner, self.texts = inner, []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def embed(self, texts, **kw):
        self.texts += list(texts)
        return self.inner.embed(texts, **kw)


def state_of(mem: Memory) -> dict:
    """Everything a change must leave exact: each collection's items (text, metadata), couplings rows, moments."""
    out: dict = {}
    for kind in KINDS:
        res = mem.store.collections[kind].get(include=["documents", "metadatas"])
        out[kind] = {sid: (doc, json.dumps(meta, sort_keys=True))
                     for sid, doc, meta in zip(res["ids"], res["documents"], res["metadatas"])}
    with closing(sqlite3.connect(str(mem.data_dir / "couplings.sqlite"))) as db:
        out["index"] = {r[0] for r in db.execute("SELECT id FROM scene")}
        out["keys"] = set(db.execute("SELECT s.id, k.name, sk.tf FROM scene_key sk JOIN scene s ON s.n = sk.scene JOIN key_name k ON k.id = sk.key"))
        out["pending"] = db.execute("SELECT COUNT(*) FROM removing").fetchone()[0]
    out["moments"] = mem.couplings._read_moments()
    return out


def assert_same_state(a: dict, b: dict) -> None:
    for key in (*KINDS, "index", "keys", "pending"):
        assert a[key] == b[key], key
    (ca, ta, oa), (cb, tb, ob) = a["moments"], b["moments"]
    assert ca == cb and np.allclose(ta, tb, atol=1e-6) and np.allclose(oa, ob, atol=1e-6)


def exact_moments(mem: Memory) -> None:
    """The stored moments equal those of the vectors the store holds (up to their float32 storage)."""
    ids = mem.store.all_ids()
    vectors = np.stack([item["vector"] for item in mem.store.get(ids, vectors=True).values()]).astype(np.float64)
    count, total, outer = mem.couplings._read_moments()
    assert count == len(ids)
    assert np.allclose(total, vectors.sum(0), atol=1e-6) and np.allclose(outer, vectors.T @ vectors, atol=1e-6)


# --- replace ------------------------------------------------------------------------------

def test_reingesting_a_file_replaces_its_scenes_without_reembedding_the_unchanged(tmp_path, embedder, monkeypatch):
    keep = write_jsonl(tmp_path / "keep.jsonl", DEMO[:6])
    doc = write_jsonl(tmp_path / "doc.jsonl", DEMO[6:16])
    counting = CountingEmbedder(embedder)
    mem = Memory(str(tmp_path / "store"), counting, create=True)
    mem.ingest(read_sources([str(keep), str(doc)]))
    first = {r.scene_id: r for r in read_sources([str(doc)])}

    # The document is edited: two passages gone, one changed, one new, the rest reordered.
    edited = dict(DEMO[9], text=DEMO[9]["text"] + " (revised)")
    v2 = [DEMO[15], DEMO[14], DEMO[8], edited, DEMO[10], DEMO[11], DEMO[12], DEMO[16]]
    write_jsonl(doc, v2)
    counting.texts.clear()
    report = mem.ingest(read_sources([str(doc)]), replace_sources=True)
    assert len(counting.texts) == 2  # the changed and the new passage, nothing else
    assert (report.added, report.already_present, report.removed) == (2, 6, 4)  # 6, 7, 13 and the old 9 went

    second = {r.scene_id: r for r in read_sources([str(doc)])}
    held = mem.store.get(mem.store.all_ids())
    assert set(held) == set(second) | {r.scene_id for r in read_sources([str(keep)])}
    assert not set(first) - set(second) & set(held)
    for sid, rec in second.items():  # positions follow the new order, kept scenes included
        assert held[sid]["meta"][SOURCE_KEY] == str(doc.resolve()) and held[sid]["meta"][POSITION_KEY] == rec.position
    exact_moments(mem)

    # The same as ingesting both files into a fresh store.
    clean = Memory(str(tmp_path / "clean"), embedder, create=True)
    clean.ingest(read_sources([str(keep), str(doc)]))
    a, b = state_of(mem), state_of(clean)
    for key in ("scenes", "index", "keys"):
        assert a[key] == b[key], key
    g, ref = mem.couplings.graph(), clean.couplings.graph()
    assert g.n == ref.n == len(held)
    scores, ref_scores = g.bm25(["film", "director"]), ref.bm25(["film", "director"])
    assert {s: scores[p] for s, p in g.position.items()} == pytest.approx({s: ref_scores[p] for s, p in ref.position.items()})

    # Python adds only unless asked (a file ingested in parts keeps its parts); a document id replaces.
    report = mem.ingest(read_sources([str(keep)])[:2])
    assert report.removed == 0 and mem.store.count() == len(held)
    notes = [SceneRecord(text=d["text"], title=d["title"]) for d in DEMO[50:53]]
    assert mem.ingest(notes, source="notes-7").added == 3 and len(mem.source_ids(["notes-7"])) == 3
    report = mem.ingest(notes[1:], source="notes-7")
    assert report.removed == 1 and mem.source_ids(["notes-7"]) == sorted(r.scene_id for r in notes[1:])
    monkeypatch.chdir(tmp_path)  # a file is found by a relative path too
    assert mem.forget(source="keep.jsonl").removed == 6 and mem.store.count() == len(second) + 2


# --- forget -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def thought_store(tmp_path_factory, embedder):
    """60 demo passages (the demo question's chain among them), with formulas, fields and a crystal written back."""
    from graph import graph
    from state.context import Context

    folder = tmp_path_factory.mktemp("forget")
    corpus = write_jsonl(folder / "corpus.jsonl", DEMO[:60])
    data_dir = str(folder / "store")
    mem = Memory(data_dir, embedder, create=True)
    mem.ingest(read_sources([str(corpus)]))
    ctx = Context(data_dir=data_dir, write_back=True)
    graph.invoke({"question": DEMO_QUESTION}, context=ctx)
    second = graph.invoke({"question": DEMO_QUESTION}, context=ctx)
    assert second["answer"] == "Mexico City" and second["crystals"]
    return data_dir, corpus


def test_a_forgotten_scene_is_gone_from_store_couplings_graphs_formulas_crystals_and_answers(thought_store):
    from adapters.embedder import DEFAULT_EMBEDDER
    from adapters.memory import open_memory
    from graph import graph
    from state.context import Context

    data_dir, _ = thought_store
    mem = open_memory(data_dir, DEFAULT_EMBEDDER)
    other = Memory(data_dir, mem.embedder)  # another process's view: its own index connection and graph
    before = other.couplings.graph()
    mandoki = next(sid for sid, pos in before.position.items() if before.titles[pos] == "Luis Mandoki")
    df_before, n_before = before.df("luis mandoki"), before.n
    cited = [sid for kind in ("formulas", "crystals") for sid, m in mem.store.ids_where(
        {"chain" if kind == "formulas" else "scene_ids": {"$contains": mandoki}}, kind=kind).items()]
    assert cited, "the write-back runs must have cited the scene"
    crystal_before = mem.store.collections["crystals"].get(include=["metadatas"])["metadatas"][0]

    report = mem.forget(scene_ids=[mandoki])
    assert report.removed == 1 and report.not_found == []
    assert not mem.store.get([mandoki]) and mandoki not in mem.couplings.existing_ids([mandoki])
    for kind, key in (("formulas", "chain"), ("crystals", "scene_ids"), ("fields", "scene_ids")):
        assert not mem.store.ids_where({key: {"$contains": mandoki}}, kind=kind), kind
    crystals = mem.store.collections["crystals"].get(include=["metadatas"])["metadatas"]
    assert not crystals or crystals[0]["strength"] < crystal_before["strength"]  # weakened, or dropped
    exact_moments(mem)

    after = other.couplings.graph()  # the other process catches up
    assert mandoki not in after.position and after.n == n_before - 1
    assert after.df("luis mandoki") == df_before - 1

    for ctx in (Context(data_dir=data_dir), Context(data_dir=data_dir, write_back=True)):
        woke: set[str] = set()
        for out in graph.stream({"question": DEMO_QUESTION}, context=ctx, stream_mode="values"):
            woke |= set(out.get("active") or {})  # every scene the field held at any step
        seen = (woke | {e.scene_id for e in out["evidence"]} | set(out["citations"])
                | {sid for f in out["formulas"] for sid in f.chain} | {sid for c in out["crystals"] for sid in c.scene_ids})
        assert mandoki not in seen
        assert "Mandoki (born" not in out["answer"]
    assert mem.forget(scene_ids=[mandoki]).not_found == [mandoki]


def test_cli_forget_by_source_and_by_scene(tmp_path, embedder):
    keep = write_jsonl(tmp_path / "keep.jsonl", DEMO[:4])
    doc = write_jsonl(tmp_path / "doc.jsonl", DEMO[4:8])
    data_dir = tmp_path / "store"
    Memory(str(data_dir), embedder, create=True).ingest(read_sources([str(keep), str(doc)]))
    one = read_sources([str(keep)])[0].scene_id
    run = subprocess.run([SCENEMIND, "--data-dir", str(data_dir), "forget", "--source", str(doc), "--scene", one,
                          "s-not-a-scene"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "forgot 5 scenes -> 3 scenes left" in run.stdout and "not in memory: s-not-a-scene" in run.stdout
    again = subprocess.run([SCENEMIND, "--data-dir", str(data_dir), "forget", "--source", "doc-none"],
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 1 and "nothing to forget" in again.stderr and "Traceback" not in again.stderr


# --- SIGKILL at any step, then rerun ------------------------------------------------------

SETUP = """
import sys, numpy as np
from adapters.embedder import load_embedder
from adapters.memory import Memory
from adapters.sources import SceneRecord, read_sources
data_dir, keep, doc = sys.argv[1:4]
mem = Memory(data_dir, load_embedder(), create=True)
mem.ingest(read_sources([keep, doc]))
a = [r.scene_id for r in read_sources([keep])]
b = [r.scene_id for r in read_sources([doc])]
v = mem.scenes(a[:3] + b[:3])
def unit(x): return x / np.linalg.norm(x)
with mem.lock.hold("test setup"):
    mem.store.upsert(["f-1", "f-2"], np.stack([unit(v[a[0]].vector + v[b[0]].vector + v[a[1]].vector),
                                               unit(v[a[2]].vector + v[b[1]].vector)]),
                     ["one → two → three", "four → five"],
                     [{"kind": "formula", "chain": [a[0], b[0], a[1]]}, {"kind": "formula", "chain": [a[2], b[1]]}],
                     kind="formulas")
    mem.store.upsert(["c-1", "c-2"], np.stack([unit(v[a[0]].vector), unit(v[b[2]].vector)]), ["q1", "q2"],
                     [{"kind": "crystal", "count": 3, "strength": 3.0, "scene_ids": [a[0], b[1]]},
                      {"kind": "crystal", "count": 2, "strength": 2.0, "scene_ids": [b[2]]}], kind="crystals")
    mem.store.upsert(["f-x"], unit(v[a[1]].vector)[None, :], ["q3"],
                     [{"kind": "field", "scene_ids": [a[1], b[0]]}], kind="fields")
"""


@pytest.fixture(scope="module")
def kill_base(tmp_path_factory):
    """A store of two files with formulas, crystals and a field citing both (built in a child process, so that
    no Chroma client of this process holds it when it is copied); then the second file is edited."""
    folder = tmp_path_factory.mktemp("kill_changes")
    keep = write_jsonl(folder / "keep.jsonl", DEMO[20:32])
    doc = write_jsonl(folder / "doc.jsonl", DEMO[32:44])
    base = folder / "base"
    subprocess.run([sys.executable, "-c", SETUP, str(base), str(keep), str(doc)], check=True, timeout=300,
                   capture_output=True)
    edited = dict(DEMO[36], text=DEMO[36]["text"] + " (revised)")
    write_jsonl(doc, [DEMO[43], DEMO[32], edited] + DEMO[38:42] + DEMO[44:47])
    return base, doc


@pytest.mark.parametrize("command,step", [
    ("replace", "ingest-added"),      # new scenes in, nothing removed yet
    ("replace", "forget-citations"),  # vanished scenes journaled, formulas/crystals rewritten, store untouched
    ("forget", "forget-journaled"),   # the removal journaled, nothing else done
    ("forget", "forget-store"),       # gone from the store, still in the couplings index
])
def test_a_change_killed_at_any_step_and_rerun_ends_like_a_clean_run(tmp_path, kill_base, embedder, command, step):
    base, doc = kill_base
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    shutil.copytree(base, killed)
    shutil.copytree(base, clean)
    args = ["ingest", str(doc), "--quiet"] if command == "replace" else ["forget", "--source", str(doc)]
    run = subprocess.run([SCENEMIND, "--data-dir", str(killed), *args], capture_output=True, text=True, timeout=300,
                         env={**os.environ, KILL_AT: step})
    assert run.returncode == -signal.SIGKILL, (run.stdout, run.stderr)

    def change(mem: Memory) -> None:
        if command == "replace":
            mem.ingest(read_sources([str(doc)]), replace_sources=True)
        else:
            mem.forget(source=str(doc.resolve()))

    rerun = Memory(str(killed), embedder)
    change(rerun)
    reference = Memory(str(clean), embedder)
    change(reference)
    after, expected = state_of(rerun), state_of(reference)
    assert_same_state(after, expected)
    assert expected["pending"] == 0 and after["scenes"] and after["formulas"]
    exact_moments(rerun)
    # the citations really changed: nothing cites a scene that is gone
    for kind, key in (("formulas", "chain"), ("crystals", "scene_ids"), ("fields", "scene_ids")):
        for _, meta in after[kind].values():
            assert set(json.loads(meta)[key]) <= after["index"], kind


def test_repair_after_a_killed_forget_lists_nothing_as_lost_and_the_forget_completes(tmp_path, kill_base, embedder):
    base, doc = kill_base
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    shutil.copytree(base, killed)
    shutil.copytree(base, clean)
    run = subprocess.run([SCENEMIND, "--data-dir", str(killed), "forget", "--source", str(doc)], capture_output=True,
                         text=True, timeout=300, env={**os.environ, KILL_AT: "forget-store"})
    assert run.returncode == -signal.SIGKILL
    check = subprocess.run([SCENEMIND, "--data-dir", str(killed), "check"], capture_output=True, text=True,
                           timeout=300)
    assert check.returncode == 0 and "interrupted: 12 scenes were being forgotten" in check.stdout, check.stdout
    repair = subprocess.run([SCENEMIND, "--data-dir", str(killed), "repair"], capture_output=True, text=True,
                            timeout=300)
    assert repair.returncode == 0, repair.stderr
    assert "lost" not in repair.stdout and "couplings index kept" in repair.stdout
    opened = Memory(str(killed), embedder)  # opening finishes the journaled removal
    reference = Memory(str(clean), embedder)
    reference.forget(source=str(doc.resolve()))
    assert_same_state(state_of(opened), state_of(reference))


# --- two writers --------------------------------------------------------------------------

HOLD = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
os.ftruncate(fd, 0); os.write(fd, f"pid {os.getpid()} ingest\\n".encode())
print("held", flush=True)
time.sleep(60)
"""


def test_a_second_writer_is_refused_with_a_clear_line(tmp_path, embedder):
    doc = write_jsonl(tmp_path / "doc.jsonl", DEMO[:5])
    data_dir = tmp_path / "store"
    mem = Memory(str(data_dir), embedder, create=True)
    mem.ingest(read_sources([str(doc)]))
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(data_dir / "write.lock")], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        started = time.monotonic()
        with pytest.raises(StoreBusy, match=rf"another ingest \(pid {holder.pid}\) is writing to .*forget"):
            mem.forget(source=str(doc.resolve()))
        write_jsonl(doc, DEMO[:3])
        with pytest.raises(StoreBusy, match="wait for it to finish, then rerun"):
            mem.ingest(read_sources([str(doc)]), replace_sources=True)
        assert time.monotonic() - started < 10
        cli = subprocess.run([SCENEMIND, "--data-dir", str(data_dir), "forget", "--source", str(doc)],
                             capture_output=True, text=True, timeout=300)
        assert cli.returncode == 2 and "another ingest" in cli.stderr and "Traceback" not in cli.stderr
    finally:
        holder.kill()
        holder.wait()
    assert mem.store.count() == 5  # nothing was changed while refused
    assert mem.ingest(read_sources([str(doc)]), replace_sources=True).removed == 2  # once the lock is free


# --- the services ---------------------------------------------------------------------------

def test_the_resonator_service_forgets_with_delete(tmp_path):
    import httpx

    from agent_servers import serve

    doc = write_jsonl(tmp_path / "doc.jsonl", DEMO[:3])
    keep = write_jsonl(tmp_path / "keep.jsonl", DEMO[3:6])
    data_dir = tmp_path / "store"
    # Written by a child process: an embedded Chroma folder belongs to one process at a time (the server).
    subprocess.run([SCENEMIND, "--data-dir", str(data_dir), "ingest", str(doc), str(keep), "--quiet"], check=True,
                   capture_output=True, timeout=300)
    one = read_sources([str(keep)])[0].scene_id
    server = serve("resonator", data_dir, tmp_path)
    try:
        url = f"{server.url}/v1/scenes"
        gone = httpx.delete(url, params={"source": str(doc), "scene_id": [one, "s-nothing"]}, timeout=120)
        assert gone.status_code == 200, gone.text
        assert gone.json()["removed"] == 4 and gone.json()["scenes"] == 2 and gone.json()["not_found"] == ["s-nothing"]
        empty = httpx.delete(url, timeout=60)
        assert empty.status_code == 422 and "forget what?" in empty.json()["detail"]
        assert "delete" in httpx.get(f"{server.url}/openapi.json", timeout=60).json()["paths"]["/v1/scenes"]
    finally:
        server.stop()
    stats = subprocess.run([SCENEMIND, "--data-dir", str(data_dir), "stats"], capture_output=True, text=True,
                           timeout=300)
    assert stats.returncode == 0 and '"scenes": 2' in stats.stdout and '"indexed_scenes": 2' in stats.stdout
