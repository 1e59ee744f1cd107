"""Memory shared by processes that share no folder: scenes in a Chroma server, couplings and the writer lock in
PostgreSQL (`--store-url` + `--state-url`). Real servers on 127.0.0.1 (`chroma run`, `postgres`), real processes,
each with a data dir of its own, stopped by PID.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx
import numpy as np
import pytest

from agent_servers import SCENEMIND, chroma, clean_env, serve
from demo_corpus import small_corpus as corpus
from scenemind_data import DEMO_QUESTION, DEMO_SCENES

pytestmark = pytest.mark.integration
FOLLOW_UP = "When was the director of the film The Goose Woman born?"


def scenemind(data_dir: Path, *argv: str, store_url: str = "", state_url: str = "",
              timeout: int = 300) -> subprocess.CompletedProcess:
    """One `scenemind` process, as a user on another machine would run it (its own data dir)."""
    args = [SCENEMIND, "--data-dir", str(data_dir)]
    args += ["--store-url", store_url] if store_url else []
    args += ["--state-url", state_url] if state_url else []
    return subprocess.run(args + list(argv), capture_output=True, text=True, timeout=timeout, env=clean_env())


def asked(proc: subprocess.CompletedProcess) -> dict:
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def chat(url: str, question: str) -> str:
    r = httpx.post(f"{url}/v1/chat/completions", json={"messages": [{"role": "user", "content": question}]},
                   timeout=120)
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]["message"]["content"]


@pytest.mark.slow
def test_processes_sharing_only_the_servers_answer_as_one_process_and_follow_each_others_changes(tmp_path, pg_url):
    path = corpus(tmp_path)
    # One process, one folder, embedded: the answers to match.
    one = tmp_path / "one"
    assert scenemind(one, "ingest", "--quiet", str(path)).returncode == 0
    reference = {q: asked(scenemind(one, "ask", "--json", q)) for q in (DEMO_QUESTION, FOLLOW_UP)}
    assert reference[DEMO_QUESTION]["answer"] == "Mexico City"

    store = chroma(tmp_path / "chroma_data", tmp_path)
    service = None
    try:
        shared = {"store_url": store.url, "state_url": pg_url}
        writer, reader = tmp_path / "machine-a", tmp_path / "machine-b"
        done = scenemind(writer, "ingest", "--quiet", str(path), **shared)
        assert done.returncode == 0 and "20 added" in done.stdout, done.stderr[-2000:]
        # B never ingested and shares no folder with A: it answers from the servers alone, as one process did.
        for question, expected in reference.items():
            got = asked(scenemind(reader, "ask", "--json", question, **shared))
            assert (got["answer"], got["citations"]) == (expected["answer"], expected["citations"])
        # Nothing of the memory is in either folder: no couplings file, no lock file.
        for folder in (writer, reader):
            assert not [p.name for p in folder.glob("*") if p.name.startswith(("couplings", "write.lock", "chroma"))]

        # A long-lived process (a service on data dir C) follows changes made by others, without a restart.
        service = serve("decoder", tmp_path / "machine-c", tmp_path, store_url=store.url, SCENEMIND_STATE_URL=pg_url)
        assert "Mexico City" in chat(service.url, DEMO_QUESTION)
        # The server drops every connection (a restart, a failover): the service reconnects by itself.
        import psycopg

        with psycopg.connect(pg_url, autocommit=True) as conn:
            dropped = conn.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE "
                                   "datname = current_database() AND pid <> pg_backend_pid()").fetchone()[0]
        assert dropped >= 1
        assert "Mexico City" in chat(service.url, DEMO_QUESTION)
        stats = json.loads(scenemind(reader, "stats", **shared).stdout)
        assert stats["indexed_scenes"] == stats["scenes"] == 20 and stats["couplings_at"].startswith("PostgreSQL")
        mandoki = [c for c in reference[DEMO_QUESTION]["citations"] if "Mandoki" in json.dumps(c)]
        assert mandoki, reference[DEMO_QUESTION]["citations"]
        gone = scenemind(reader, "forget", "--source", str(path), **shared)
        assert gone.returncode == 0 and "forgot 20 scenes" in gone.stdout, gone.stderr[-2000:]
        # where the memory is: the servers, not the folder this process ran in
        assert f"scenes left in the Chroma server {store.url} + PostgreSQL {pg_url}" in gone.stdout, gone.stdout
        assert "Mexico City" not in chat(service.url, DEMO_QUESTION)
        back = scenemind(writer, "ingest", "--quiet", str(path), **shared)
        assert back.returncode == 0 and "20 added" in back.stdout
        assert "Mexico City" in chat(service.url, DEMO_QUESTION)
    finally:
        if service:
            service.stop()
        store.stop()


def test_one_writer_among_processes_on_any_folder_and_check_and_repair_there(tmp_path, pg_url):
    from adapters.postgres import advisory_lock

    store = chroma(tmp_path / "chroma_data", tmp_path)
    try:
        shared = {"store_url": store.url, "state_url": pg_url}
        path = corpus(tmp_path, n=4)
        with advisory_lock(pg_url).hold("test ingest"):
            refused = scenemind(tmp_path / "a", "ingest", "--quiet", str(path), **shared)
        assert refused.returncode == 2, refused.stderr[-2000:]
        line = refused.stderr.strip().splitlines()[-1]
        assert "another test ingest (pid" in line and "is writing to the memory at postgresql://" in line
        assert "Traceback" not in refused.stderr
        # Free again: the same ingest goes through, from another folder.
        done = scenemind(tmp_path / "b", "ingest", "--quiet", str(path), **shared)
        assert done.returncode == 0 and "4 added" in done.stdout, done.stderr[-2000:]
        assert f"couplings in the Chroma server {store.url} + PostgreSQL {pg_url} (" in done.stdout, done.stdout
        # check reads the index in PostgreSQL; a lost index is rebuilt there by repair, from any folder.
        checked = scenemind(tmp_path / "c", "check", **shared)
        assert checked.returncode == 0 and "couplings index: PostgreSQL postgresql://" in checked.stdout
        import psycopg

        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute("DELETE FROM scene_key")
            conn.execute("DELETE FROM scene")
        checked = scenemind(tmp_path / "c", "check", **shared)
        assert checked.returncode == 1 and "4 scenes in the store but not in the index" in checked.stdout
        assert scenemind(tmp_path / "d", "repair", **shared).returncode == 0
        checked = scenemind(tmp_path / "c", "check", **shared)
        assert checked.returncode == 0 and ": 4 scenes" in checked.stdout, checked.stdout
        # State in PostgreSQL without a shared scene store is refused before any model loads.
        alone = scenemind(tmp_path / "c", "stats", state_url=pg_url, timeout=60)
        assert alone.returncode == 2 and "--state-url needs --store-url" in alone.stderr
    finally:
        store.stop()


def test_couplings_in_postgresql_equal_the_file_and_other_processes_catch_up(tmp_path, pg_url):
    """The index's tables in PostgreSQL hold what the SQLite file holds, through adds, removals and a rebuild;
    a second connection (another process's) catches up with each change incrementally."""
    from adapters.coupling_index import SceneRow, open_couplings

    rng = np.random.default_rng(7)

    def row(i: int) -> SceneRow:
        v = rng.normal(size=16)
        # keys not in alphabetical order: a scene's entities must come back in one order from either database
        return SceneRow(f"s{i}", f"T{i % 7}", {f"e:zeta{i % 5}": 1, f"e:only{i}": 1, f"e:alpha{i % 4}": 1,
                                               f"t:w{i % 11}": 2, f"t:x{i % 3}": 1}, v / np.linalg.norm(v))

    rows = [row(i) for i in range(60)]
    file, db = open_couplings(tmp_path, writable=True), open_couplings(tmp_path, pg_url, writable=True)
    other = open_couplings(tmp_path / "elsewhere", pg_url)
    assert other.graph().n == 0

    def by_id(graph, scores) -> dict[str, float]:
        return {sid: round(float(scores[pos]), 9) for pos, sid in enumerate(graph.ids) if sid}

    def same() -> None:
        assert file.count() == db.count()
        g = file.graph()
        assert max(by_id(g, g.bm25(["w3", "x1"])).values()) > 0
        for x in (db.graph(), other.graph()):
            assert sorted(s for s in x.ids if s) == sorted(s for s in g.ids if s)
            np.testing.assert_allclose(x.mean, g.mean, atol=1e-12)
            np.testing.assert_allclose(x.second, g.second, atol=1e-12)
            assert by_id(x, x.bm25(["w3", "x1"])) == by_id(g, g.bm25(["w3", "x1"]))
            assert [x.idf(e) for e in ("zeta1", "only12", "only3")] == [g.idf(e) for e in ("zeta1", "only12", "only3")]
            # the order bridges break ties by
            assert {sid: x.entities_of(pos) for pos, sid in enumerate(x.ids) if sid} == \
                   {sid: g.entities_of(pos) for pos, sid in enumerate(g.ids) if sid}

    for ix in (file, db):
        ix.add(rows[:40])
        ix.add(rows[30:])  # overlapping: present ids are skipped
    same()
    for ix in (file, db):
        ix.journal_removal({r.id: r.vector for r in rows[:10]})
        assert ix.pending_removals() == sorted(r.id for r in rows[:10])
        assert ix.remove([r.id for r in rows[:10]]) == 10
        assert ix.remove([r.id for r in rows[:10]]) == 0  # a rerun after a kill removes nothing twice
    same()
    assert {"s0", "s9"} <= other.forgotten
    for ix in (file, db):
        ix.add(rows[:5])  # re-added after removal
    same()
    db.rebuild([rows[20:50]])
    file.rebuild([rows[20:50]])
    same()
    assert db.count()[0] == other.graph().n == 30


def shared_state(store_url: str, state_url: str) -> dict:
    """Every scene item (text, metadata) in the Chroma server and every couplings row and moment in PostgreSQL."""
    import chromadb
    import psycopg

    host, port = store_url.rsplit("//", 1)[1].split(":")
    client = chromadb.HttpClient(host=host, port=int(port))
    out: dict = {}
    for col in client.list_collections():
        res = client.get_collection(col.name).get(include=["documents", "metadatas"])
        out[col.name] = {sid: (doc, json.dumps(meta, sort_keys=True))
                         for sid, doc, meta in zip(res["ids"], res["documents"], res["metadatas"])}
    with psycopg.connect(state_url) as conn:
        out["index"] = {r[0] for r in conn.execute("SELECT id FROM scene")}
        out["keys"] = set(conn.execute("SELECT s.id, k.name, sk.tf FROM scene_key sk JOIN scene s ON s.n = sk.scene JOIN key_name k ON k.id = sk.key").fetchall())
        out["pending"] = conn.execute("SELECT COUNT(*) FROM removing").fetchone()[0]
        count, total = conn.execute("SELECT count, total FROM moments").fetchone()
    out["moments"] = (count, np.frombuffer(total, dtype=np.float64))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("step", ["forget-journaled", "forget-store"])
def test_a_forget_killed_on_the_servers_and_rerun_from_another_folder_ends_like_a_clean_one(tmp_path, pg_server,
                                                                                              step):
    from adapters.memory import KILL_AT

    keep, doc = tmp_path / "keep.jsonl", tmp_path / "doc.jsonl"
    lines = Path(DEMO_SCENES).read_text().splitlines()
    keep.write_text("\n".join(lines[:8]) + "\n")
    doc.write_text("\n".join(lines[8:14]) + "\n")
    runs, stores = {}, []
    try:
        for name in ("killed", "clean"):
            stores.append(store := chroma(tmp_path / f"chroma-{name}", tmp_path))
            database = pg_server.new_database(f"kill_{name}_{step.replace('-', '_')}")
            runs[name] = {"store_url": store.url, "state_url": database}
            done = scenemind(tmp_path / f"{name}-a", "ingest", "--quiet", str(keep), str(doc), **runs[name])
            assert done.returncode == 0, done.stderr[-2000:]
        killed, clean = runs["killed"], runs["clean"]
        args = [SCENEMIND, "--data-dir", str(tmp_path / "killed-a"), "--store-url", killed["store_url"],
                "--state-url", killed["state_url"], "forget", "--source", str(doc)]
        dead = subprocess.run(args, capture_output=True, text=True, timeout=300, env=clean_env(**{KILL_AT: step}))
        assert dead.returncode == -9, dead.stderr[-2000:]
        assert shared_state(**killed)["pending"] == 6  # journaled in PostgreSQL, not finished
        # The rerun comes from another folder (another machine): the journal is in the database, not in a folder.
        again = scenemind(tmp_path / "killed-b", "forget", "--source", str(doc), **killed)
        assert again.returncode == 0 and "forgot 6 scenes" in again.stdout, again.stderr[-2000:]
        assert scenemind(tmp_path / "clean-b", "forget", "--source", str(doc), **clean).returncode == 0
        after, expected = shared_state(**killed), shared_state(**clean)
        (count, total), (want_count, want_total) = after.pop("moments"), expected.pop("moments")
        assert after == expected and expected["pending"] == 0 and len(expected["index"]) == 8
        assert count == want_count == 8 and np.allclose(total, want_total, atol=1e-6)
    finally:
        for store in stores:
            store.stop()


def test_messages_naming_the_repair_command_never_show_the_password(pg_url, tmp_path):
    """A couplings database written by another version: the one line names `repair` with the URL, password masked."""
    import psycopg

    from adapters.coupling_index import open_couplings
    from state.errors import StoreUnavailable

    with_password = pg_url.replace("://postgres@", "://postgres:s3cret@", 1)  # the test server trusts any password
    assert with_password != pg_url
    open_couplings(tmp_path, with_password, writable=True).close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE meta SET value = '99' WHERE name = 'schema'")
    with pytest.raises(StoreUnavailable) as refused:
        open_couplings(tmp_path, with_password)
    said = str(refused.value)
    assert "repair" in said and "postgres:***@" in said and "s3cret" not in said, said
