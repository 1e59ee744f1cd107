"""The scene store as a server: a real `chroma run` on 127.0.0.1, through `HttpClient`, same code path.

A small corpus ingested through the server thinks exactly as the same corpus
ingested into an embedded store; the couplings index stays a SQLite file beside
the data dir, and a process pointed at a folder without it refuses to start.
"""

from __future__ import annotations

import pytest

from adapters.embedder import DEFAULT_EMBEDDER
from adapters.memory import Memory, open_memory
from adapters.sources import read_sources
from agent_servers import chroma
from scenemind_data import DEMO_QUESTION, DEMO_SCENES
from state.context import Context
from state.errors import StoreUnavailable

pytestmark = pytest.mark.integration
NEEDED = {"Gaby: A True Story", "Luis Mandoki"}


@pytest.fixture(scope="module")
def small_corpus():
    records = read_sources([str(DEMO_SCENES)])
    return [r for r in records if r.title in NEEDED] + [r for r in records if r.title not in NEEDED][:18]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    work = tmp_path_factory.mktemp("chroma_server")
    store = chroma(work / "chroma_data", work)
    print(f"\nchroma ready in {store.startup_s:.1f}s")
    yield store.url, work
    store.stop()


def test_server_store_thinks_like_the_embedded_store(server, small_corpus, embedder, tmp_path):
    from graph import graph

    url, work = server
    remote_dir, local_dir = work / "server_side", tmp_path / "embedded"
    report = Memory(str(remote_dir), embedder, store_url=url, create=True).ingest(small_corpus)
    assert (report.added, report.scenes) == (20, 20)
    again = Memory(str(remote_dir), embedder, store_url=url).ingest(small_corpus)
    assert again.added == 0 and again.already_present == 20  # idempotent through the server too
    Memory(str(local_dir), embedder, create=True).ingest(small_corpus)
    on_server = graph.invoke({"question": DEMO_QUESTION},
                             context=Context(data_dir=str(remote_dir), store_url=url, write_back=True))
    embedded = graph.invoke({"question": DEMO_QUESTION}, context=Context(data_dir=str(local_dir)))
    assert on_server["answer"] == embedded["answer"] and on_server["citations"] == embedded["citations"]
    assert {e.title for e in on_server["evidence"]} >= NEEDED
    # Formulas and the field were written to the server, not to a local folder.
    assert not (remote_dir / "chroma").exists()
    stats = open_memory(str(remote_dir), DEFAULT_EMBEDDER, store_url=url).stats()
    assert stats["scenes"] == 20 and stats["formulas"] >= 1 and stats["indexed_scenes"] == 20


def test_a_folder_without_the_couplings_is_refused(server, tmp_path):
    url, work = server
    with pytest.raises(StoreUnavailable, match="indexes none: point --data-dir"):
        open_memory(str(tmp_path / "elsewhere"), DEFAULT_EMBEDDER, store_url=url)


def test_server_down_is_one_clear_error(tmp_path):
    from agent_servers import free_port

    port = free_port()
    with pytest.raises(StoreUnavailable, match=rf"chroma run --path DIR --host 127.0.0.1 --port {port}"):
        open_memory(str(tmp_path), DEFAULT_EMBEDDER, store_url=f"http://127.0.0.1:{port}")
