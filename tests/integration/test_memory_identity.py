"""A PostgreSQL couplings database knows whose memory it describes: the embedder and the Chroma scenes collection
its couplings were written for (`meta`), checked on every open. Real `chroma run` servers and a real PostgreSQL,
stopped by PID.
"""

from __future__ import annotations

import json

import pytest

from adapters.coupling_index import IDENTITY
from adapters.embedder import E5_SMALL, MINILM
from agent_servers import chroma
from demo_corpus import small_corpus as corpus
from test_shared_state import scenemind

pytestmark = pytest.mark.integration


def database(state_url: str) -> dict:
    """What the couplings database holds: meta, scene ids, couplings rows, removal log, moments."""
    import psycopg

    with psycopg.connect(state_url) as conn:
        return {"meta": dict(conn.execute("SELECT name, value FROM meta").fetchall()),
                "scenes": sorted(r[0] for r in conn.execute("SELECT id FROM scene")),
                "rows": conn.execute("SELECT COUNT(*) FROM scene_key").fetchone()[0],
                "removed": conn.execute("SELECT COUNT(*) FROM removed").fetchone()[0],
                "moments": conn.execute("SELECT count, total FROM moments").fetchall()}


def chroma_items(store_url: str) -> dict:
    import chromadb

    host, port = store_url.rsplit("//", 1)[1].split(":")
    client = chromadb.HttpClient(host=host, port=int(port))
    return {col.name: (str(col.id), sorted(client.get_collection(col.name).get(include=[])["ids"]))
            for col in client.list_collections()}


@pytest.mark.slow
def test_a_database_filled_for_another_embedders_store_is_refused_in_one_line_until_repair_rebuilds_it(
        tmp_path, pg_url):
    path = corpus(tmp_path, n=4)
    a, b = chroma(tmp_path / "chroma-a", tmp_path), chroma(tmp_path / "chroma-b", tmp_path)
    try:
        done = scenemind(tmp_path / "a", "ingest", "--quiet", str(path), store_url=a.url, state_url=pg_url)
        assert done.returncode == 0, done.stderr[-2000:]
        recorded = database(pg_url)["meta"]
        assert (recorded["embedder"], recorded["store"]) == (E5_SMALL, a.url)
        assert recorded["scenes_collection"] == chroma_items(a.url)["scenemind_scenes"][0]
        # Store B: the same texts by another embedder of the same dim (384), its couplings in its own folder.
        built = scenemind(tmp_path / "b", "--embedder", "minilm", "ingest", "--quiet", str(path), store_url=b.url)
        assert built.returncode == 0, built.stderr[-2000:]
        before, b_before = database(pg_url), chroma_items(b.url)
        for argv in (["ingest", "--quiet", str(path)], ["ask", "--json", "Who directed The Goose Woman?"],
                     ["stats"]):
            got = scenemind(tmp_path / "c", "--embedder", "minilm", *argv, store_url=b.url, state_url=pg_url)
            assert got.returncode == 2 and "Traceback" not in got.stderr, got.stderr[-2000:]
            said = [line for line in got.stderr.splitlines() if "another memory" in line]
            assert len(said) == 1 and said[0] == got.stderr.strip().splitlines()[-1], got.stderr[-2000:]
            for part in (E5_SMALL, MINILM, a.url, b.url, "another database", "repair"):
                assert part in said[0], said[0]
        assert database(pg_url) == before and chroma_items(b.url) == b_before  # nothing written to either

        # repair takes the database over for store B (same scene ids, so only the identity says it must rebuild)
        fixed = scenemind(tmp_path / "c", "--embedder", "minilm", "repair", store_url=b.url, state_url=pg_url)
        assert fixed.returncode == 0 and "describe another memory" in fixed.stderr, fixed.stderr[-2000:]
        after = database(pg_url)
        assert (after["meta"]["embedder"], after["meta"]["store"]) == (MINILM, b.url)
        assert after["scenes"] == before["scenes"] and after["moments"] != before["moments"]  # MiniLM's moments
        stats = scenemind(tmp_path / "c", "--embedder", "minilm", "stats", store_url=b.url, state_url=pg_url)
        assert stats.returncode == 0 and json.loads(stats.stdout)["indexed_scenes"] == 4, stats.stderr[-2000:]
        # ... and store A is now the other memory
        other = scenemind(tmp_path / "a", "stats", store_url=a.url, state_url=pg_url)
        assert other.returncode == 2 and "another memory" in other.stderr.strip().splitlines()[-1]
    finally:
        a.stop()
        b.stop()


def test_a_database_from_before_identities_is_adopted_and_another_collection_of_one_embedder_refused(
        tmp_path, pg_url, embedder):
    import psycopg

    from adapters.memory import Memory
    from adapters.sources import read_sources
    from state.errors import StoreUnavailable

    a, c = chroma(tmp_path / "chroma-a", tmp_path), chroma(tmp_path / "chroma-c", tmp_path)
    try:
        first = Memory(str(tmp_path / "a"), embedder, store_url=a.url, create=True, state_url=pg_url)
        first.ingest(read_sources([str(corpus(tmp_path, n=4))]))
        identity = {k: v for k, v in first.store.identity().items() if k in IDENTITY}
        # A database written before identities: its couplings, no identity.
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute("DELETE FROM meta WHERE name <> 'schema'")
        reader = Memory(str(tmp_path / "b"), embedder, store_url=a.url, state_url=pg_url)
        assert reader.stats()["indexed_scenes"] == 4
        assert set(database(pg_url)["meta"]) == {"schema"}  # a reader answers and records nothing
        reader.ingest([])  # the next writer adopts it
        recorded = database(pg_url)["meta"]
        assert {k: recorded[k] for k in IDENTITY} == identity and recorded["store"] == a.url
        # Another folder on the same servers is the same memory (another machine's process).
        assert Memory(str(tmp_path / "d"), embedder, store_url=a.url, state_url=pg_url).stats()["scenes"] == 4
        # The same embedder over another server's collection is another memory: refused, nothing recorded.
        before = database(pg_url)
        with pytest.raises(StoreUnavailable, match="another memory") as refused:
            Memory(str(tmp_path / "e"), embedder, store_url=c.url, create=True, state_url=pg_url)
        assert c.url in str(refused.value) and identity["scenes_collection"] in str(refused.value)
        assert database(pg_url) == before
    finally:
        a.stop()
        c.stop()


def test_a_data_dirs_couplings_are_refused_beside_another_store_until_repair_rebuilds_them(tmp_path, embedder):
    """The SQLite index records its memory too. A data dir pointed at another Chroma server (`--store-url`, no
    `--state-url`), or a couplings.sqlite copied beside another store, holds as many scenes as the store (so the
    count check passes) but describes other ones: refused in one line until `repair` rebuilds it; an index from
    before identities is adopted by its next writer."""
    import sqlite3
    from contextlib import closing
    from pathlib import Path

    from adapters.memory import Memory
    from adapters.sources import read_sources
    from adapters.store_health import repair
    from scenemind_data import DEMO_SCENES
    from state.errors import StoreUnavailable

    lines = Path(DEMO_SCENES).read_text().splitlines()
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    first.write_text("\n".join(lines[:4]) + "\n")
    second.write_text("\n".join(lines[4:8]) + "\n")
    a, b = chroma(tmp_path / "chroma-a", tmp_path), chroma(tmp_path / "chroma-b", tmp_path)
    try:
        Memory(str(tmp_path / "a"), embedder, store_url=a.url, create=True).ingest(read_sources([str(first)]))
        Memory(str(tmp_path / "b"), embedder, store_url=b.url, create=True).ingest(read_sources([str(second)]))
        with pytest.raises(StoreUnavailable, match="another memory") as refused:
            Memory(str(tmp_path / "a"), embedder, store_url=b.url)
        said = str(refused.value)
        assert b.url in said and a.url in said and f"--data-dir {tmp_path / 'a'} --store-url {b.url} repair" in said
        from adapters.store_health import check

        named = [p for p in check(str(tmp_path / "a"), embedder.spec, store_url=b.url).problems if "another memory" in p]
        assert len(named) == 1 and a.url in named[0] and b.url in named[0] and "None" not in named[0], named
    finally:
        a.stop()
        b.stop()
    # Embedded: another memory's couplings.sqlite copied into a data dir.
    Memory(str(tmp_path / "e1"), embedder, create=True).ingest(read_sources([str(first)]))
    Memory(str(tmp_path / "e2"), embedder, create=True).ingest(read_sources([str(second)]))
    theirs = Memory(str(tmp_path / "e1"), embedder).couplings.all_ids()
    for extra in ("", "-wal", "-shm"):
        Path(f"{tmp_path / 'e2' / 'couplings.sqlite'}{extra}").unlink(missing_ok=True)
    # SQLite's backup: the rows still in e1's write-ahead log come along (a copy of the file alone may hold none)
    with closing(sqlite3.connect(tmp_path / "e1" / "couplings.sqlite")) as src, \
            closing(sqlite3.connect(tmp_path / "e2" / "couplings.sqlite")) as dst:
        src.backup(dst)
    with pytest.raises(StoreUnavailable, match="another memory"):
        Memory(str(tmp_path / "e2"), embedder)
    repair(str(tmp_path / "e2"), embedder.spec)
    mine = Memory(str(tmp_path / "e2"), embedder)
    assert set(mine.couplings.all_ids()) == set(mine.store.all_ids()) and not set(theirs) & set(mine.store.all_ids())
    # An index written before identities (no rows in meta): a reader records nothing, the next writer adopts it.
    with closing(sqlite3.connect(tmp_path / "e2" / "couplings.sqlite")) as db, db:
        db.execute("DELETE FROM meta")
    Memory(str(tmp_path / "e2"), embedder)
    assert not Memory(str(tmp_path / "e2"), embedder).couplings.recorded_identity()
    Memory(str(tmp_path / "e2"), embedder).ingest([])
    recorded = Memory(str(tmp_path / "e2"), embedder).couplings.recorded_identity()
    assert recorded["scenes_collection"] == mine.store.identity()["scenes_collection"]
    assert recorded["store"] == str(tmp_path / "e2" / "chroma")
