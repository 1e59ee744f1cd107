"""The in-memory coupling graph is held still while a thread reads it: another thread's catch-up (after another
process changed memory) waits for the reader, instead of changing arrays under it (a service answers on a
thread pool while other processes ingest and forget)."""

from __future__ import annotations

import threading
import time

import numpy as np

from adapters.coupling_index import SceneRow, open_couplings


def rows(start: int, stop: int) -> list[SceneRow]:
    rng = np.random.default_rng(start)
    out = []
    for i in range(start, stop):
        v = rng.normal(size=8)
        out.append(SceneRow(f"s{i}", f"T{i}", {f"e:ent{i % 4}": 1, f"t:w{i % 5}": 1}, v / np.linalg.norm(v)))
    return out


def test_a_catch_up_waits_for_readers_and_a_reader_never_waits_on_itself(tmp_path):
    writer = open_couplings(tmp_path, writable=True)  # another process
    writer.add(rows(0, 10))
    index = open_couplings(tmp_path)  # this process: a service's index
    seen: dict[str, object] = {}
    inside, release = threading.Event(), threading.Event()

    def reader() -> None:
        with index.reading() as graph:
            seen["n_at_start"] = graph.n
            seen["ids_at_start"] = list(graph.ids)
            assert index.graph() is graph  # re-entrant: this thread's own call does not wait on its hold
            inside.set()
            release.wait(10)
            seen["n_at_end"] = graph.n
            seen["ids_at_end"] = list(graph.ids)

    t = threading.Thread(target=reader)
    t.start()
    assert inside.wait(10)
    writer.journal_removal({r.id: r.vector for r in rows(0, 3)})
    writer.remove([r.id for r in rows(0, 3)])
    writer.add(rows(10, 15))
    caught: dict[str, float] = {}

    def catch_up() -> None:
        caught["n"] = index.graph().n
        caught["at"] = time.monotonic()

    c = threading.Thread(target=catch_up)
    c.start()
    time.sleep(0.3)
    assert c.is_alive() and not caught  # waiting for the reader
    released_at = time.monotonic()
    release.set()
    t.join(10)
    c.join(10)
    assert seen["n_at_start"] == seen["n_at_end"] == 10 and seen["ids_at_start"] == seen["ids_at_end"]
    assert caught["n"] == 12 and caught["at"] >= released_at
    with index.reading() as graph:
        assert graph.n == 12 and {"s0", "s1", "s2"} <= index.forgotten and graph.position.get("s14") is not None
