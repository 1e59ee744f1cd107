"""Memory: the embedder, the scene store and the couplings index, opened together.

One `Memory` per (data dir, store url, embedder) per process. Ingest is
idempotent and resumable: ids are content hashes, a scene missing from either
the store or the couplings index (or whose vector no longer reads back) is
(re)written, nothing present is doubled. One writer per data dir at a time
(`adapters.store_lock`); opening to think refuses a store whose scenes and
couplings index disagree, naming `scenemind repair`.

Scenes remember their source (a file's path or a caller's document id) and their
position in it. Ingesting a source again replaces it: new scenes are added, scenes
that vanished from it are removed, unchanged ones are kept (not re-embedded).
`forget` removes a source or given scenes. A removal is journaled in the couplings
index first (with the vectors the moments must lose), then taken out of the formulas,
crystals and fields that cite it, then out of the store, and last out of the index in
one transaction; whoever writes next finishes a removal that was killed half-way.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np

from adapters.coupling_index import SceneRow, open_couplings
from adapters.embedder import Embedder, load_embedder
from adapters.lexicon import scene_keys
from adapters.postgres import redact, server_options
from adapters.scene_store import FINGERPRINT_TEXTS, SceneStore
from adapters.sources import SceneRecord, with_source
from adapters.store_lock import WriterLock, writer_lock
from state.errors import StoreBusy, StoreDamaged, StoreFull, StoreUnavailable
from state.models import Recalled

# Large enough that length-sorted embedding batches pad little (a writer thread overlapping the next
# batch measured no faster on 2 cores: torch already uses both); small enough for a live progress bar.
INGEST_BATCH = 512
ENTITY_CACHE = 50_000  # entity vectors kept per process for composed probes
SCENE_CACHE = 20_000  # scenes (text + vector) kept per process for resonance


# A scene's source and position, in the store's metadata (apart from a record's own "meta", which may say "source").
SOURCE_KEY, POSITION_KEY = "scene_source", "scene_position"
KILL_AT = "SCENEMIND_TEST_KILL_AT"  # tests: SIGKILL this process at a named step of a change


def _kill_point(step: str) -> None:
    """Die here, as a kill -9 would, when the crash tests ask for this step (never set in normal use)."""
    if os.environ.get(KILL_AT) == step:
        os.kill(os.getpid(), signal.SIGKILL)


class CachedScene(NamedTuple):
    text: str
    title: str | None
    vector: np.ndarray


@dataclass
class IngestReport:
    records: int
    added: int
    already_present: int
    scenes: int
    couplings: int
    rewritten: int = 0  # counted present, but their vector did not read back: written again
    kept_stored: int = 0  # explicit ids already stored with another text: the stored text was kept
    removed: int = 0  # scenes that vanished from a re-ingested source: removed
    moved: int = 0  # kept scenes whose source or position changed: their metadata was updated


@dataclass
class ForgetReport:
    """What a removal took out: scenes, and what the formulas, crystals and fields that cited them became."""

    removed: int = 0
    not_found: list[str] = field(default_factory=list)  # asked-for scene ids memory did not hold
    formulas_dropped: int = 0
    formulas_rewritten: int = 0
    crystals_dropped: int = 0
    crystals_weakened: int = 0
    fields_changed: int = 0
    scenes: int = 0  # scenes left

    def merge(self, other: ForgetReport) -> ForgetReport:
        for name in ("removed", "formulas_dropped", "formulas_rewritten", "crystals_dropped", "crystals_weakened",
                     "fields_changed"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        return self


def _source_meta(rec: SceneRecord) -> dict[str, object]:
    return {SOURCE_KEY: rec.source, POSITION_KEY: rec.position} if rec.source is not None else {}


def passage_text(title: str | None, text: str) -> str:
    """What gets embedded: title and text, as in the multi-hop benchmarks."""
    return f"{title}\n{text}" if title else text


class Memory:
    def __init__(self, data_dir: str, embedder: Embedder, store_url: str = "", create: bool = False,
                 verify: bool = True, state_url: str = ""):
        self.data_dir = Path(data_dir)
        self.embedder = embedder
        self.store_url = store_url
        self.state_url = state_url
        self.lock = memory_lock(self.data_dir, store_url, state_url)
        # The embedder's identity is where it puts a few fixed texts, not its folder's name.
        fingerprint = embedder.embed(list(FINGERPRINT_TEXTS))
        self.store = SceneStore(str(self.data_dir), embedder.name, embedder.dim, store_url=store_url, create=create,
                                fingerprint=fingerprint, lock=self.lock)
        self.couplings = open_couplings(self.data_dir, state_url, writable=create)
        # Refuse couplings filled for another memory before using them (a database outlives any folder; a data dir
        # may be pointed at another Chroma server).
        try:
            self.couplings.bind(self.store.identity())
        except StoreUnavailable:
            if not create and verify and not self.store.count():
                self.check_agreement()  # an emptied store: "was it deleted?" says more than "another memory"
            raise
        self._write_lock = threading.Lock()
        self._entity_vectors: dict[str, np.ndarray] = {}
        self._scene_cache: dict[str, CachedScene] = {}
        if not create and verify:
            self.check_agreement()

    def check_agreement(self) -> None:
        """Refuse to think on a half store: the scene store and the couplings index must hold as many scenes.

        Skipped while another process writes (an ingest in flight is half-done by nature).
        """
        if self.couplings.pending_removals() and not self.lock.held_elsewhere():
            try:  # a forget or replace was killed half-way: finish it before thinking on its leftovers
                with self._write_lock, self.lock.hold("finishing an interrupted removal"):
                    self._finish_removals()
            except (StoreBusy, StoreUnavailable):
                return  # read-only or busy: the removal stays in flight; its scenes are half gone by design
        scenes, indexed = self.store.count(), self.couplings.count()[0]
        if scenes == indexed or self.lock.held_elsewhere():
            return
        index = self.couplings.where
        if self.store_url and not self.state_url and scenes and not indexed:
            # Without --state-url the couplings index is a SQLite file beside the data dir: a process
            # pointed at the wrong folder would otherwise think without couplings and say nothing.
            raise StoreUnavailable(
                f"the Chroma server at {self.store_url} holds {scenes} scenes but {index} "
                "indexes none: point --data-dir / SCENEMIND_DATA_DIR at the folder the ingest used "
                "(every process sharing this store must share that folder), or keep the couplings in "
                "PostgreSQL with --state-url so that processes need no folder in common")
        where = f"--data-dir {self.data_dir}" + server_options(self.store_url, self.state_url)
        if indexed > scenes:
            cause = "scenes were lost from the store" if scenes else "the store holds none of them (was it deleted?)"
        else:
            cause = ("the couplings index is missing or empty" if not indexed
                     else "an ingest was interrupted, or the index lost scenes")
        raise StoreDamaged(
            f"half a store: {self.store.where} holds {scenes} scenes but the couplings index {index} indexes "
            f"{indexed} ({cause}); rerun the interrupted ingest, or run `scenemind {where} repair` "
            f"(`scenemind {where} check` says what is missing)")

    # --- writing -------------------------------------------------------------------------
    def ingest(self, records: Iterable[SceneRecord], progress: Callable[[int], None] | None = None, *,
               source: str | None = None, replace_sources: bool | None = None) -> IngestReport:
        """Add scenes; with `replace_sources`, each source the records come from is replaced (its scenes that
        are not among the records are removed). `source` names the document of records that name none
        (positions follow their order); giving it means replacing it unless `replace_sources=False`.

        The default adds only when no `source` is given: a caller that ingests a file in parts must not
        lose the earlier parts (the CLI, which ingests whole files, replaces by default).
        """
        if replace_sources is None:
            replace_sources = source is not None
        records = [replace(r) for r in records]  # positions and sources are filled in on copies
        if source is not None:
            with_source(records, source)
        unique: dict[str, SceneRecord] = {}
        for rec in records:
            unique.setdefault(rec.scene_id, rec)
        ids = list(unique)
        sources = list(dict.fromkeys(r.source for r in unique.values() if r.source))
        removed = moved = 0
        with self._write_lock, self.lock.hold("ingest"):
            self.couplings.make_writable()
            self._finish_removals()  # a forget or replace killed half-way is finished first
            # What counts as present must read back: a scene whose vector is lost is written again.
            stored, unreadable = self.store.readable(sorted(self.store.existing_ids(ids)))
            in_index = self.couplings.existing_ids(ids)
            todo = [sid for sid in ids if sid not in stored or sid not in in_index]
            kept = sum(1 for sid, item in stored.items() if unique[sid].id is not None
                       and item["text"] != unique[sid].text)
            if progress:
                progress(len(ids) - len(todo))
            written = 0
            try:
                for start in range(0, len(todo), INGEST_BATCH):
                    batch = [unique[sid] for sid in todo[start : start + INGEST_BATCH]]
                    need = [r for r in batch if r.scene_id not in stored]
                    self._write_batch(batch, need, self.embedder.embed([passage_text(r.title, r.text) for r in need]),
                                      stored)
                    written += len(batch)
                    if progress:
                        progress(len(batch))
                    _kill_point("ingest-batch")
                # Kept scenes that moved (or came from another source): their metadata only, no re-embedding.
                shift = [sid for sid, item in stored.items() if unique[sid].source is not None
                         and (item["meta"].get(SOURCE_KEY), item["meta"].get(POSITION_KEY))
                         != (unique[sid].source, unique[sid].position)]
                if shift:
                    self.store.update_meta(shift, [_source_meta(unique[sid]) for sid in shift])
                moved = len(shift)
                _kill_point("ingest-added")
                if replace_sources and sources:
                    vanished = [sid for sid in self.source_ids(sources) if sid not in unique]
                    removed = self._remove(vanished).removed
            except (StoreUnavailable, StoreFull, StoreDamaged) as exc:
                raise type(exc)(f"{exc} [this ingest had finished {written} of the {len(todo)} scenes it had "
                                "to write; a rerun finishes the rest]") from exc
        scenes, links = self.couplings.count()
        return IngestReport(len(records), len(todo), len(ids) - len(todo), self.store.count(), links,
                            rewritten=len(unreadable), kept_stored=kept, removed=removed, moved=moved)

    # --- removing ------------------------------------------------------------------------
    def source_ids(self, sources: Sequence[str]) -> list[str]:
        """Ids of the stored scenes that came from any of these sources."""
        sources = list(dict.fromkeys(sources))
        if not sources:
            return []
        where = {SOURCE_KEY: sources[0]} if len(sources) == 1 else {SOURCE_KEY: {"$in": sources}}
        return sorted(self.store.ids_where(where))

    def forget(self, source: str | Sequence[str] | None = None,
               scene_ids: Sequence[str] | None = None) -> ForgetReport:
        """Remove the scenes of a source (a file path or a document id) and/or the given scene ids.

        Gone from the store, the couplings (entity counts, BM25 statistics, vector moments), every
        process's coupling graph (they catch up on their next query), and the formulas, crystals and
        fields that cite them. Rerunning a forget that was killed ends as a clean run would.
        """
        sources = [source] if isinstance(source, str) else list(source or [])
        # A file is recorded by its absolute path: a relative one (or one through a link) finds it too.
        sources = list(dict.fromkeys(sources + [os.path.realpath(s) for s in sources]))
        asked = list(dict.fromkeys(scene_ids or []))
        with self._write_lock, self.lock.hold("forget"):
            self.couplings.make_writable()
            report = self._finish_removals()
            present = self.store.existing_ids(asked) | self.couplings.existing_ids(asked)
            ids = list(dict.fromkeys(self.source_ids(sources) + [sid for sid in asked if sid in present]))
            report.merge(self._remove(ids))
            report.not_found = [sid for sid in asked if sid not in present]
        report.scenes = self.store.count()
        return report

    def _remove(self, ids: Sequence[str]) -> ForgetReport:
        """Journal the removal of `ids` (with their vectors, for the moments), then carry it out."""
        if not ids:
            return ForgetReport()
        good, _ = self.store.readable(list(ids))
        self.couplings.journal_removal({sid: good[sid]["vector"] if sid in good else None for sid in ids})
        _kill_point("forget-journaled")
        return self._finish_removals()

    def _finish_removals(self) -> ForgetReport:
        """Carry out every journaled removal: citations, then the store, then the index (one transaction).

        Each step is idempotent, so a removal killed anywhere is finished by running this again.
        """
        from adapters.citations import forget_citations

        ids = self.couplings.pending_removals()
        if not ids:
            return ForgetReport()
        report = ForgetReport(removed=len(ids))
        cited = forget_citations(self, set(ids))
        report.formulas_dropped, report.formulas_rewritten = cited.formulas_dropped, cited.formulas_rewritten
        report.crystals_dropped, report.crystals_weakened = cited.crystals_dropped, cited.crystals_weakened
        report.fields_changed = cited.fields_changed
        _kill_point("forget-citations")
        self.store.delete(ids)
        _kill_point("forget-store")
        self.couplings.remove(ids)
        for sid in ids:
            self._scene_cache.pop(sid, None)
        return report

    def _write_batch(self, batch: list[SceneRecord], need: list[SceneRecord], vectors: np.ndarray,
                     stored: dict[str, dict]) -> None:
        if need:
            self.store.upsert(
                [r.scene_id for r in need], vectors, [r.text for r in need],
                [{**{k: v for k, v in r.meta.items() if isinstance(v, (str, int, float, bool))},
                  "title": r.title, "kind": "scene", **_source_meta(r)} for r in need],
            )
        # Couplings only after the vectors are safely in the store: a kill in between is healed on rerun
        # (the vectors of scenes stored by the killed run were read back when the ingest began).
        vector_of = {r.scene_id: v for r, v in zip(need, vectors)}
        vector_of.update({r.scene_id: stored[r.scene_id]["vector"] for r in batch if r.scene_id not in vector_of})
        self.couplings.add(SceneRow(r.scene_id, r.title, scene_keys(r.text, r.title), vector_of[r.scene_id])
                           for r in batch)

    # --- reading -------------------------------------------------------------------------
    def dense(self, vectors: np.ndarray, k: int, kind: str = "scenes") -> list[list[Recalled]]:
        """Nearest scenes for each vector, as Recalled with their cosine as dense score."""
        out = []
        for hits in self.store.nearest(vectors, k, kind=kind):
            out.append([
                Recalled(id=sid, text=doc, title=meta.get("title"), score=cos, dense=cos,
                         kind="formula" if kind == "formulas" else "scene")
                for sid, cos, doc, meta in hits
            ])
        return out

    def entity_vectors(self, names: Sequence[str]) -> np.ndarray:
        """Vectors of entity names, embedded once per process (one batch for the misses)."""
        # Read into a local dict first: another thread (a service's pool) may clear the cache in between.
        found = {n: v for n in dict.fromkeys(names) if (v := self._entity_vectors.get(n)) is not None}
        missing = [n for n in dict.fromkeys(names) if n not in found]
        if missing:
            fresh = dict(zip(missing, self.embedder.embed(missing)))
            found.update(fresh)
            if len(self._entity_vectors) > ENTITY_CACHE:
                self._entity_vectors.clear()
            self._entity_vectors.update(fresh)
        return np.stack([found[n] for n in names]) if names else np.zeros((0, self.embedder.dim))

    def scenes(self, ids: Sequence[str]) -> dict[str, CachedScene]:
        """Text, title and vector of stored scenes, read once per process (scenes never change under an id;
        a scene forgotten since, here or by another process whose removal the graph has caught up with, is not)."""
        gone = self.couplings.forgotten
        for sid in [sid for sid in ids if sid in gone]:
            self._scene_cache.pop(sid, None)
        # Read into a local dict first: another thread (a service's pool) may clear the cache in between.
        found = {sid: hit for sid in dict.fromkeys(ids) if (hit := self._scene_cache.get(sid)) is not None}
        missing = [sid for sid in dict.fromkeys(ids) if sid not in found]
        if missing:
            fresh = {sid: CachedScene(item["text"], item["meta"].get("title"), item["vector"])
                     for sid, item in self.store.get(missing, vectors=True).items()}
            found.update(fresh)
            if len(self._scene_cache) + len(fresh) > SCENE_CACHE:
                self._scene_cache.clear()
            self._scene_cache.update(fresh)
        return {sid: found[sid] for sid in ids if sid in found}

    @property
    def where(self) -> str:
        """Where the memory is, for messages: the data dir, or the servers (no password)."""
        if not self.store_url:
            return str(self.data_dir)
        return f"the Chroma server {redact(self.store_url)} + {self.couplings.where}"

    def stats(self) -> dict[str, object]:
        scenes, links = self.couplings.count()
        return {
            "data_dir": str(self.data_dir),
            "embedder": self.embedder.name,
            "dim": self.embedder.dim,
            "scenes": self.store.count("scenes"),
            "formulas": self.store.count("formulas"),
            "crystals": self.store.count("crystals"),
            "indexed_scenes": scenes,
            "couplings": links,
            "couplings_at": self.couplings.where,
        }


def memory_lock(data_dir: Path | str, store_url: str = "", state_url: str = "") -> WriterLock:
    """One writer at a time: an flock in the data dir, or, when the state is in PostgreSQL, an advisory lock
    there (processes on several machines share no folder)."""
    if not state_url:
        return writer_lock(data_dir)
    if not store_url:
        raise StoreUnavailable("--state-url needs --store-url: couplings in PostgreSQL must describe scenes that "
                               "every process reads, in a Chroma server (an embedded store is one folder's)")
    from adapters.postgres import advisory_lock

    return advisory_lock(state_url)


_open: dict[tuple[str, str, str, str], Memory] = {}
_open_lock = threading.Lock()


def open_memory(data_dir: str, embedder: str, store_url: str = "", create: bool = False,
                verify: bool = True, state_url: str = "") -> Memory:
    """The process-wide Memory for these settings (built on first use; `verify=False` opens a half store too)."""
    key = (str(Path(data_dir).resolve()), store_url, embedder, state_url)
    memory_lock(data_dir, store_url, state_url)  # a setting that cannot work fails before any model loads
    if not create and not store_url and not Path(data_dir).exists():
        # Fail before loading any model: a missing store is a one-line answer, not a 10 s wait.
        raise StoreUnavailable(f"no scene store at {data_dir}: run `scenemind ingest FILE...` first "
                               "or point SCENEMIND_DATA_DIR at an existing store")
    with _open_lock:
        if key not in _open:
            _open[key] = Memory(data_dir, load_embedder(embedder), store_url=store_url, create=create, verify=verify,
                                state_url=state_url)
        return _open[key]


def store_stats(data_dir: str, embedder: str, store_url: str = "", state_url: str = "") -> dict[str, object]:
    """What the store holds, even when it is half a store (then `problem` says so and names the repair)."""
    mem = open_memory(data_dir, embedder, store_url=store_url, verify=False, state_url=state_url)
    stats = mem.stats()
    try:
        mem.check_agreement()
    except (StoreDamaged, StoreUnavailable) as exc:
        stats["problem"] = str(exc)
    return stats
