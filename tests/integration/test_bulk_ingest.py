"""The bulk path (precomputed vectors) stopped between its store writes and its couplings commits, then rerun:
every scene ends in the store and the couplings exactly once, as after one clean run."""

from __future__ import annotations

import json

import numpy as np
import pytest

import adapters.bulk_ingest as bulk
from adapters.memory import Memory
from adapters.sources import SceneRecord
from scenemind_data import DEMO_SCENES

pytestmark = pytest.mark.integration


class Stop(RuntimeError):
    pass


def test_a_stopped_bulk_ingest_is_finished_by_rerunning_it(tmp_path, embedder, monkeypatch):
    demo = [json.loads(line) for line in DEMO_SCENES.read_text(encoding="utf-8").splitlines() if line.strip()]
    records = [SceneRecord(text=f"{r['text']} (part {n})", title=r.get("title"))
               for n in range(6) for r in demo[:100]][:520]  # the rerun's last 220 wait for the final commit
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(len(records), embedder.dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    monkeypatch.setattr(bulk, "COUPLINGS_BATCH", 250)  # couplings committed every 3 store batches of 100
    mem = Memory(str(tmp_path / "m"), embedder, create=True)
    cache_before = mem.couplings._db.execute("PRAGMA cache_size").fetchone()[0]
    batches = []

    def stop_after_four() -> None:
        batches.append(1)
        if len(batches) == 4:
            raise Stop

    with pytest.raises(Stop):
        bulk.bulk_ingest(mem, records, vectors, batch=100, check=stop_after_four)
    # Stopped with 400 scenes in the store and the couplings of only the first 300 committed.
    assert mem.store.count() == 400 and mem.couplings.count()[0] == 300
    assert mem.couplings._db.execute("PRAGMA cache_size").fetchone()[0] == cache_before  # restored on the way out
    report = bulk.bulk_ingest(mem, records, vectors, batch=100)
    assert (report.added, report.already_present) == (len(records) - 300, 300)
    assert mem.store.count() == mem.couplings.count()[0] == len(records)
    graph = mem.couplings.graph()
    assert graph.n == len(records) and set(graph.position) == {r.scene_id for r in records}
    # the moments hold every vector once
    mean, _ = graph.dense_moments(vectors[7])
    assert mean == pytest.approx(float((vectors.astype(np.float64) @ vectors[7]).mean()), abs=1e-6)
