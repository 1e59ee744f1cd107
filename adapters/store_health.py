"""`scenemind check` and `scenemind repair`: does the store agree with its couplings index, and mend it.

check (reads only): every scene id in the Chroma store and in the couplings
index, whether each stored vector reads back, whether vector search runs.

repair (the one writer, under the data dir's lock): rebuilds what can be
rebuilt from what survived, in this order of trust:
  1. the scene store's text and metadata (Chroma's SQLite) are the source of truth;
  2. a vector that does not read back is re-embedded from its text;
  3. the couplings index is derived data: rebuilt from the store whenever it disagrees
     or cannot be read;
  4. scenes only the index knew (their text is gone) are listed for re-ingest.
Damaged files are moved aside (`*.damaged-<time>`), never deleted.
"""

from __future__ import annotations

import shutil
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from adapters.coupling_index import SceneRow, open_couplings
from adapters.embedder import Embedder, load_embedder
from adapters.lexicon import scene_keys
from adapters.memory import memory_lock, passage_text
from adapters.postgres import server_options
from adapters.scene_store import FINGERPRINT_TEXTS, KINDS, SceneStore
from state.errors import EmbedderMismatch, SceneMindError, StoreDamaged, StoreUnavailable

EMBED_BATCH = 256
SHOWN = 5  # ids named in a report line


@dataclass
class Health:
    """What `check` found; `ok` when store and index agree and every vector reads back."""

    data_dir: str
    store: str
    scenes: int | None = None
    indexed: int | None = None
    only_in_store: list[str] = field(default_factory=list)
    only_in_index: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    forgetting: list[str] = field(default_factory=list)  # journaled removals a killed forget/replace left
    index_at: str = ""  # the index file, or its PostgreSQL database
    options: str = ""  # the --store-url / --state-url the repair needs too

    @property
    def ok(self) -> bool:
        return not (self.problems or self.only_in_store or self.only_in_index or self.unreadable)

    def lines(self) -> list[str]:
        out = [f"store: {self.store}: {_n(self.scenes)} scenes",
               f"couplings index: {self.index_at or Path(self.data_dir) / 'couplings.sqlite'}: "
               f"{_n(self.indexed)} scenes"]
        out += [f"problem: {p}" for p in self.problems]
        for what, ids in (("scenes without a readable vector", self.unreadable),
                          ("scenes in the store but not in the index", self.only_in_store),
                          ("scenes in the index but not in the store", self.only_in_index)):
            if ids:
                out.append(f"problem: {len(ids)} {what} (e.g. {', '.join(ids[:SHOWN])})")
        if self.forgetting:
            out.append(f"interrupted: {len(self.forgetting)} scenes were being forgotten (a forget or replace was "
                       "killed); the next ingest, forget or ask finishes it, or rerun the command")
        out.append("ok: the store and its couplings index agree" if self.ok else
                   f"damaged: run `scenemind --data-dir {self.data_dir}{self.options} repair`")
        return out


@dataclass
class RepairReport:
    scenes: int = 0
    reembedded: int = 0
    index_rebuilt: bool = False
    moved_aside: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)  # "id (title)" of scenes only the index knew
    dropped_kinds: list[str] = field(default_factory=list)

    def lines(self, data_dir: str) -> list[str]:
        out = [f"repaired {data_dir}: {self.scenes} scenes; {self.reembedded} vectors re-embedded from their text; "
               f"couplings index {'rebuilt from the store' if self.index_rebuilt else 'kept (it agreed)'}"]
        out += [f"moved aside (damaged): {p}" for p in self.moved_aside]
        if self.dropped_kinds:
            out.append(f"emptied (derived, unreadable): {', '.join(self.dropped_kinds)}")
        if self.lost:
            out.append(f"{len(self.lost)} scenes were lost from the store (only the index knew them), e.g. "
                       f"{'; '.join(self.lost[:SHOWN])}: re-ingest the files they came from (`scenemind ingest "
                       "FILE...`; nothing is doubled)")
        return out


def _n(value: int | None) -> str:
    return "?" if value is None else str(value)


def _fingerprint(embedder: Embedder) -> np.ndarray:
    return embedder.embed(list(FINGERPRINT_TEXTS))


def check(data_dir: str, embedder_spec: str, store_url: str = "", state_url: str = "") -> Health:
    """Read everything once and say what disagrees (writes nothing)."""
    embedder = load_embedder(embedder_spec)
    data = Path(data_dir)
    health = Health(str(data), store_url or str(data / "chroma"),
                    options=server_options(store_url, state_url))
    if not store_url and not data.exists():
        raise StoreUnavailable(f"no scene store at {data}: nothing to check")
    store_ids: list[str] | None = None
    try:
        store = SceneStore(str(data), embedder.name, embedder.dim, store_url=store_url,
                           fingerprint=_fingerprint(embedder), check_files=False)
        damaged = {kind: problem for kind, _, problem in store.damaged_vector_files()}
        health.problems += [f"{kind}: {problem}" for kind, problem in damaged.items()]
        store_ids = store.all_ids()
        health.scenes = len(store_ids)
        if "scenes" not in damaged:  # never hand Chroma a damaged HNSW file: it may crash, not raise
            _, health.unreadable = store.readable(store_ids)
            if store_ids:
                store.nearest_ids(_fingerprint(embedder)[0], 1)
    except EmbedderMismatch:
        raise
    except SceneMindError as exc:
        health.problems.append(str(exc))
    index_ids: list[str] | None = None
    try:
        index = open_couplings(data, state_url)
        health.index_at = index.where
        other = index.identity_problem(store.identity()) if store_ids is not None else None
        if other:
            health.problems.append(other)
        index_ids = index.all_ids()
        health.indexed = len(index_ids)
        health.forgetting = index.pending_removals()
        index.close()
    except SceneMindError as exc:
        health.problems.append(str(exc))
    if store_ids is not None and index_ids is not None:
        in_store, in_index = set(store_ids), set(index_ids)
        forgetting = set(health.forgetting)  # half-removed by design until the removal is finished
        health.only_in_store = [i for i in store_ids if i not in in_index and i not in forgetting]
        health.only_in_index = [i for i in index_ids if i not in in_store and i not in forgetting]
    return health


def _aside(path: Path) -> Path:
    target = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
    shutil.move(str(path), str(target))
    return target


def _reset_chroma_cache(chroma_dir: Path) -> None:
    """Forget this folder's open embedded client: after files were moved, a new client must read them afresh."""
    from chromadb.api.client import SharedSystemClient

    SharedSystemClient._identifier_to_system.pop(str(chroma_dir), None)
    SharedSystemClient._identifier_to_refcount.pop(str(chroma_dir), None)


def _vector_segment(chroma_dir: Path, collection_id: str) -> Path | None:
    """The folder of a collection's HNSW files (Chroma's own catalogue, read only)."""
    db = sqlite3.connect(f"file:{chroma_dir / 'chroma.sqlite3'}?mode=ro", uri=True)
    try:
        row = db.execute("SELECT id FROM segments WHERE collection = ? AND scope = 'VECTOR'",
                         (collection_id,)).fetchone()
    finally:
        db.close()
    return chroma_dir / row[0] if row and (chroma_dir / row[0]).exists() else None


def repair(data_dir: str, embedder_spec: str, store_url: str = "", state_url: str = "",
           progress: Callable[[str], None] | None = None) -> RepairReport:
    """Make the store and its couplings index whole and agreeing again, from what survived."""
    say = progress or (lambda _: None)
    embedder = load_embedder(embedder_spec)
    fingerprint = _fingerprint(embedder)
    data = Path(data_dir)
    chroma_dir = data / "chroma"
    report = RepairReport()
    lock = memory_lock(data, store_url, state_url)
    with lock.hold("repair"):
        def open_store() -> SceneStore:
            return SceneStore(str(data), embedder.name, embedder.dim, store_url=store_url, create=True,
                              fingerprint=fingerprint, lock=lock, check_files=False)

        def reopen_without(damage: list[tuple[Path, str]]) -> SceneStore:
            """Move each damaged path aside (never delete), saying why, then open the store afresh."""
            for path, why in damage:
                say(why)
                report.moved_aside.append(str(_aside(path)))
            _reset_chroma_cache(chroma_dir)
            return open_store()

        try:
            store = open_store()
        except StoreDamaged:
            if store_url:
                raise
            store = reopen_without([(chroma_dir, f"the Chroma store at {chroma_dir} cannot be opened: "
                                                 "moving it aside")])
        damaged = store.damaged_vector_files()  # before any read: Chroma may crash on them
        if damaged:
            store = reopen_without([(segment, f"{problem}: moving {segment} aside, its vectors are re-embedded")
                                    for _, segment, problem in damaged])
        store.finish_rebuild()
        try:
            ids = store.all_ids()
        except StoreDamaged:
            segment = None if store_url else _vector_segment(chroma_dir, str(store.collections["scenes"].id))
            if segment is None:
                raise
            store = reopen_without([(segment, f"the vector index {segment} cannot be loaded: moving it aside, "
                                              "vectors are re-embedded")])
            ids = store.all_ids()
        items, reembedded = _scene_items(store, ids, embedder, say)
        report.scenes, report.reembedded = len(items), reembedded
        if reembedded:
            say(f"rebuilding the scenes collection ({len(items)} scenes)")
            store.rebuild("scenes", items)
        for kind in KINDS[1:]:  # formulas, crystals, fields are derived: unreadable ones are emptied
            try:
                unreadable = store.readable(store.all_ids(kind), kind=kind)[1]
            except StoreDamaged:
                unreadable = ["?"]
            if unreadable:
                store.rebuild(kind, {})
                report.dropped_kinds.append(kind)
        report.index_rebuilt, report.lost, moved = _repair_index(data, items, say, state_url, store)
        report.moved_aside += moved
    return report


def _scene_items(store: SceneStore, ids: list[str], embedder: Embedder,
                 say: Callable[[str], None]) -> tuple[dict[str, dict[str, Any]], int]:
    """id -> text, meta, vector for every stored scene; vectors that do not read back are re-embedded."""
    good, bad = store.readable(ids)
    items = {sid: good[sid] for sid in ids if sid in good}
    if bad:
        say(f"{len(bad)} vectors do not read back: re-embedding them from their text")
        docs = store.documents(bad)
        lost_text = [sid for sid in bad if sid not in docs]
        if lost_text:
            raise StoreDamaged(f"{len(lost_text)} scenes of {store.where} lost both vector and text: re-ingest "
                               "into a fresh data dir")
        for start in range(0, len(bad), EMBED_BATCH):
            chunk = bad[start : start + EMBED_BATCH]
            vectors = embedder.embed([passage_text(docs[s]["meta"].get("title"), docs[s]["text"]) for s in chunk])
            for sid, vector in zip(chunk, vectors):
                items[sid] = {**docs[sid], "vector": vector}
    return {sid: items[sid] for sid in ids}, len(bad)


def _repair_index(data: Path, items: dict[str, dict[str, Any]], say: Callable[[str], None],
                  state_url: str = "", store: SceneStore | None = None) -> tuple[bool, list[str], list[str]]:
    """(rebuilt, lost scenes, files moved aside): the index rebuilt from the store unless it agrees already.

    Couplings filled for another memory are rebuilt even when their scene ids agree (the same texts embedded by
    another embedder: their moments are another space's), and then record this store as their memory.
    """
    path = data / "couplings.sqlite"
    moved: list[str] = []
    known: dict[str, str | None] = {}
    identity = store.identity() if store is not None else None
    try:
        index = open_couplings(data, state_url, writable=True)
        with index._sql():
            known = dict(index._db.execute("SELECT id, title FROM scene").fetchall())
        moments = index._read_moments()
        # A forget killed after the store let go of its scenes: they are being forgotten, not lost.
        forgetting = set(index.pending_removals())
        known = {sid: title for sid, title in known.items() if sid not in forgetting}
        # Couplings of another memory (another store or embedder) are rebuilt without calling their scenes lost;
        # beside an empty store they are this memory's, whose store was lost or rebuilt: its scenes must come back.
        other = identity is not None and bool(items) and index.identity_problem(identity) is not None
        if other:
            say(f"the couplings in {index.where} describe another memory: rebuilding them for this store")
            known = {}  # another memory's scenes are not this store's losses
        if not other and set(known) == set(items) and (moments is None) == (not items):
            if identity is not None:  # a database from before identities, or a store whose collection was rebuilt
                index.record_identity(identity)
            return False, [], moved
    except SceneMindError:
        if state_url:
            raise  # a database is not moved aside; the error names what to do
        say(f"the couplings index {path} cannot be read: moving it aside and rebuilding it from the store")
        for extra in (Path(f"{path}-wal"), Path(f"{path}-shm")):
            if extra.exists():
                moved.append(str(_aside(extra)))
        moved.insert(0, str(_aside(path)))
        index = open_couplings(data, writable=True)
    lost = [f"{sid} ({title})" if title else sid for sid, title in known.items() if sid not in items]
    ids = list(items)
    say(f"rebuilding the couplings index from {len(ids)} stored scenes")

    def batches():
        for start in range(0, len(ids), 512):
            yield [SceneRow(sid, items[sid]["meta"].get("title"),
                            scene_keys(items[sid]["text"], items[sid]["meta"].get("title")), items[sid]["vector"])
                   for sid in ids[start : start + 512]]

    index.rebuild(batches())
    if identity is not None:  # after the rebuild: one killed half-way leaves the old couplings and their identity
        index.record_identity(identity)
    index.close()
    return True, lost, moved
