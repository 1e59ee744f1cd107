"""Memory's per-process caches under a thread pool (a service answers requests on one): each call returns every
scene and entity vector it asked for, while other threads fill and clear the same caches."""

from __future__ import annotations

import random
import threading

import numpy as np
import pytest

import adapters.memory as memory_module
from adapters.memory import Memory
from adapters.sources import read_sources
from scenemind_data import DEMO_SCENES

pytestmark = pytest.mark.integration


def test_caches_give_every_thread_what_it_asked_for_while_others_clear_them(tmp_path, embedder, monkeypatch):
    mem = Memory(str(tmp_path / "store"), embedder, create=True)
    mem.ingest(read_sources([str(DEMO_SCENES)])[:40])
    ids = mem.store.all_ids()
    names = ["Mexico City", "Luis Mandoki", "Oxygen", "James Dewar", "Paris", "Gaby"]
    truth = {n: v for n, v in zip(names, embedder.embed(names))}
    # Tiny caches: every few calls one thread clears what another is reading.
    monkeypatch.setattr(memory_module, "SCENE_CACHE", 4)
    monkeypatch.setattr(memory_module, "ENTITY_CACHE", 2)
    errors: list[BaseException] = []

    def work(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(150):
                asked = rng.sample(ids, 3)
                got = mem.scenes(asked)
                assert set(got) == set(asked)
                wanted = rng.sample(names, 2)
                vectors = mem.entity_vectors(wanted)
                assert np.allclose(vectors, np.stack([truth[n] for n in wanted]), atol=1e-5)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, repr(errors[:3])
