"""Bulk ingest: scenes whose vectors were computed elsewhere, written through Memory's own pieces.

For stores too large to embed here (a million scenes at ~40 passages/s is a week of one
laptop core), a caller brings each scene's vector: embedded on other machines, or derived
(the scale benchmark averages vectors of the scenes' sentences). Everything else is
what `Memory.ingest` does: the writer lock, vectors committed to the store before their
couplings (a killed bulk ingest is finished by rerunning it), ids already in both the
store and the couplings index skipped. The vectors must come from the memory's embedder
space (same dimension, unit length): nothing here can check that they mean the same thing.

    report = bulk_ingest(mem, records, vectors, progress=bar.update)
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from adapters.coupling_index import SceneRow
from adapters.lexicon import scene_keys
from adapters.memory import Memory
from adapters.sources import SceneRecord

BULK_BATCH = 2_000  # Chroma's add batch here is at most 5,461; larger batches amortise its per-call cost
# Couplings are committed this many scenes at a time. In the text form (schema 4) both of scene_key's indexes
# took inserts at random places, so each commit rewrote (through the WAL) most of their pages that a batch
# touched: at 232k scenes a 2,000-scene commit wrote 195 MB; ten times fewer commits with a page cache that
# holds a commit's pages halved the couplings' time at 100k scenes (1.84 -> 0.94 ms per scene). Schema 5
# appends scene_key in scene order and inserts only new keys' names at random places (0.11 ms per scene at
# 100k); the grouped commits stay, as they still save a commit's fixed cost.
COUPLINGS_BATCH = 20_000
BULK_CACHE_KIB = 1 << 20  # SQLite page cache while a bulk ingest writes (1 GiB; the default is 2 MiB)


@dataclass
class BulkReport:
    records: int
    added: int
    already_present: int
    seconds: dict[str, float] = field(default_factory=dict)  # store, keys (text -> couplings), couplings (SQLite)


def bulk_ingest(mem: Memory, records: Sequence[SceneRecord], vectors: np.ndarray,
                progress: Callable[[int], None] | None = None, batch: int = BULK_BATCH,
                check: Callable[[], None] | None = None) -> BulkReport:
    """Write `records` with their precomputed `vectors` (row i belongs to record i); `check` runs per batch
    (a caller's guard, e.g. against running out of memory) and may raise to stop between batches."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.shape != (len(records), mem.embedder.dim):
        raise ValueError(f"vectors must be {len(records)} x {mem.embedder.dim} (the embedder's dimension), "
                         f"got {vectors.shape}")
    norms = np.linalg.norm(vectors, axis=1)
    if len(norms) and not np.allclose(norms, 1.0, atol=1e-3):
        raise ValueError("vectors must be unit length, as the embedder's are (normalise them first)")
    first: dict[str, int] = {}
    for n, rec in enumerate(records):
        first.setdefault(rec.scene_id, n)
    seconds = {"store": 0.0, "keys": 0.0, "couplings": 0.0}
    added = 0
    waiting: list[SceneRow] = []  # in the store, their couplings not yet committed

    def commit_couplings() -> None:
        t0 = time.perf_counter()
        if waiting:
            mem.couplings.add(waiting)
            waiting.clear()
        seconds["couplings"] += time.perf_counter() - t0

    with mem.lock.hold("ingest"):
        mem.couplings.make_writable()
        with _page_cache(mem.couplings):
            ids = list(first)
            for start in range(0, len(ids), batch):
                chunk = ids[start : start + batch]
                t0 = time.perf_counter()
                # Present in both: skip. In the store only (a killed run): its couplings are written below.
                in_index = mem.couplings.existing_ids(chunk)
                stored = mem.store.existing_ids([sid for sid in chunk if sid not in in_index])
                todo = [sid for sid in chunk if sid not in in_index]
                need = [sid for sid in todo if sid not in stored]
                if need:
                    rows = [first[sid] for sid in need]
                    mem.store.upsert(need, vectors[rows], [records[i].text for i in rows],
                                     [{**{k: v for k, v in records[i].meta.items()
                                          if isinstance(v, (str, int, float, bool))},
                                       "title": records[i].title, "kind": "scene"} for i in rows])
                t1 = time.perf_counter()
                waiting.extend(SceneRow(sid, records[first[sid]].title,
                                        scene_keys(records[first[sid]].text, records[first[sid]].title),
                                        vectors[first[sid]]) for sid in todo)
                seconds["store"] += t1 - t0
                seconds["keys"] += time.perf_counter() - t1
                if len(waiting) >= COUPLINGS_BATCH:
                    commit_couplings()
                added += len(todo)
                if progress:
                    progress(len(chunk))
                if check:
                    check()
            commit_couplings()
    return BulkReport(len(records), added, len(first) - added, {k: round(v, 3) for k, v in seconds.items()})


@contextmanager
def _page_cache(couplings) -> Iterator[None]:
    """A large SQLite page cache on the couplings file while inside (its own setting restored after)."""
    db = getattr(couplings, "_db", None)
    if not isinstance(db, sqlite3.Connection) or getattr(couplings, "url", ""):
        yield  # a database server keeps its own cache
        return
    before = db.execute("PRAGMA cache_size").fetchone()[0]
    db.execute(f"PRAGMA cache_size = -{BULK_CACHE_KIB}")
    try:
        yield
    finally:
        db.execute(f"PRAGMA cache_size = {before}")
