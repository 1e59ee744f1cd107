"""The scene store: Chroma collections of scenes, formulas and crystals in one space.

Embedded (`PersistentClient` on a folder) or a Chroma server (`HttpClient`),
same code path. We never let Chroma embed (its default function downloads a
model): vectors always come from our embedder. Each collection records the
embedder's name, dimension and fingerprint (its vectors of a few fixed texts),
and a store is refused to an embedder whose vectors differ: a folder name says
nothing about the weights inside it.

Every call into Chroma goes through `_chroma()`, which turns what Chroma raises
(a damaged file, a full disk, a read-only folder, a server that stopped
answering) into one domain error naming the store and the remedy.
"""

from __future__ import annotations

import base64
import logging
import os
import sqlite3
import struct
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

from adapters.store_lock import WriterLock, writer_lock
from state.errors import EmbedderMismatch, SceneMindError, StoreBusy, StoreDamaged, StoreFull, StoreUnavailable

log = logging.getLogger("scenemind.store")

# Chroma's max add batch is 5,461 here; stay well under it.
ADD_BATCH = 2_000
READ_BATCH = 500
# Set at creation: HNSW defaults lose recall on hard data and cannot be changed later.
HNSW = {"space": "cosine", "ef_construction": 200, "ef_search": 128, "max_neighbors": 32}
KINDS = ("scenes", "formulas", "crystals", "fields")
# Texts whose vectors identify an embedder; one English, one Russian, so any space has something to say.
FINGERPRINT_TEXTS = ("A lighthouse keeper on a rocky island writes letters to a painter in 1887.",
                     "Смотритель маяка на скалистом острове пишет письма художнику в 1887 году.")
# Same weights give cosine 1 up to float noise (threads, f16 storage); another model lands far below.
FINGERPRINT_MIN_COS = 0.99
NEARLY_FULL_BYTES = 1 << 20  # less free than this when a write fails: the disk is full, not the store damaged
WRITE_BACK_WAIT_S = 5.0  # how long a write-back of formulas/fields/crystals waits for a running ingest


# hnswlib's saved header as Chroma writes it (header.bin, 100 bytes): a format version, then offsetLevel0,
# max_elements, cur_element_count, size_data_per_element, label_offset, offsetData, maxlevel, enterpoint,
# maxM, maxM0, M, mult, ef_construction.
HNSW_HEADER = struct.Struct("<IQQQQQQiIQQQdQ")


def vector_file_problem(segment: Path) -> str | None:
    """Why a collection's HNSW files cannot be loaded safely, or None.

    Checked before Chroma's native code reads them: a truncated data file can crash the process
    (a segfault, no error to catch), so the sizes are compared with what the header promises.
    """
    header = segment / "header.bin"
    if not header.exists():
        return None  # nothing persisted yet: a small or empty collection lives in Chroma's log
    raw = header.read_bytes()
    if len(raw) != HNSW_HEADER.size:
        return f"{header} is {len(raw)} bytes, not {HNSW_HEADER.size}"
    (version, offset0, max_elements, count, per_element, label_offset, data_offset, max_level, enter,
     *_rest) = HNSW_HEADER.unpack(raw)
    if (version != 1 or offset0 != 0 or not 0 < per_element < 1 << 24 or count > max_elements
            or not data_offset < label_offset < per_element or (label_offset - data_offset) % 4
            or not -1 <= max_level < 64 or (count and enter >= count)):  # -1: an empty index
        return f"{header} does not hold a valid HNSW header"
    for name, need in (("data_level0.bin", count * per_element), ("length.bin", 4 * count)):
        size = (segment / name).stat().st_size if (segment / name).exists() else 0
        if size < need:
            return f"{segment / name} is {size:,} bytes, under the {need:,} its {count:,} vectors need"
    return None


def encode_fingerprint(vectors: np.ndarray) -> str:
    return base64.b64encode(np.asarray(vectors, dtype=np.float16).tobytes()).decode("ascii")


def decode_fingerprint(text: Any, dim: int) -> np.ndarray | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        flat = np.frombuffer(base64.b64decode(text), dtype=np.float16).astype(np.float32)
        return flat.reshape(-1, dim)
    except ValueError:
        return None


def fingerprints_agree(recorded: np.ndarray, current: np.ndarray) -> bool:
    if recorded.shape != current.shape:
        return False
    a = recorded / np.maximum(np.linalg.norm(recorded, axis=1, keepdims=True), 1e-12)
    b = current / np.maximum(np.linalg.norm(current, axis=1, keepdims=True), 1e-12)
    return bool(np.min(np.sum(a * b, axis=1)) >= FINGERPRINT_MIN_COS)


def _is_transport_error(exc: BaseException) -> bool:
    """A connection-level failure (server gone), anywhere in the exception's chain."""
    import httpx

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, (httpx.TransportError, ConnectionError)):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


class SceneStore:
    """Add, fetch and search scenes (and formulas, crystals) by vector."""

    def __init__(self, data_dir: str, embedder_name: str, dim: int, store_url: str = "", create: bool = False,
                 fingerprint: np.ndarray | None = None, lock: WriterLock | None = None, check_files: bool = True):
        self.embedder_name, self.dim = embedder_name, dim
        self.fingerprint = fingerprint
        self.data_dir, self.store_url = Path(data_dir), store_url
        self.where = store_url or str(self.data_dir / "chroma")
        self.lock = lock or writer_lock(data_dir)
        if check_files:  # before Chroma loads a damaged HNSW file (only repair opens a store without this)
            for _, _, problem in self.damaged_vector_files():
                raise StoreDamaged(f"the scene store at {self.where} is damaged ({problem}): run "
                                   f"{self._cli('check')} to see what, then {self._cli('repair')}")
        self.client = self._client(create)
        self.collections = {kind: self._collection(kind) for kind in KINDS}

    def damaged_vector_files(self) -> list[tuple[str, Path, str]]:
        """(kind, segment folder, problem) for each embedded collection whose HNSW files are not whole."""
        catalogue = self.data_dir / "chroma" / "chroma.sqlite3"
        if self.store_url or not catalogue.exists():
            return []
        try:  # Chroma's own catalogue, read only: which folder holds which collection's vectors
            db = sqlite3.connect(f"file:{catalogue}?mode=ro", uri=True)
            try:
                rows = db.execute("SELECT s.id, c.name FROM segments s JOIN collections c ON s.collection = c.id "
                                  "WHERE s.scope = 'VECTOR'").fetchall()
            finally:
                db.close()
        except sqlite3.Error:
            return []  # a catalogue SQLite cannot read: Chroma names that itself when it opens
        out = []
        for segment_id, name in rows:
            kind = name.removeprefix("scenemind_")
            # The header's own sizes, not the configured dim: another embedder's store is refused by name/dim later.
            problem = vector_file_problem(catalogue.parent / segment_id) if kind in KINDS else None
            if problem:
                out.append((kind, catalogue.parent / segment_id, problem))
        return out

    # --- errors ----------------------------------------------------------------------------
    def _cli(self, command: str) -> str:
        where = f"--data-dir {self.data_dir}" + (f" --store-url {self.store_url}" if self.store_url else "")
        return f"`scenemind {where} {command}`"

    def translate(self, exc: BaseException) -> SceneMindError:
        """What Chroma raised, as one domain error that names the store and what to do."""
        text = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:240]
        low = str(exc).lower()
        if self.store_url and _is_transport_error(exc):
            return StoreUnavailable(
                f"the store server at {self.store_url} stopped answering ({type(exc).__name__}: {text}): "
                "every batch written before is committed, the one in flight was not; start the server again "
                "and rerun (ids are stable: nothing is doubled)")
        if "disk is full" in low or "no space left" in low or getattr(exc, "errno", None) == 28 or self._no_space():
            return StoreFull(f"disk full at {self.where}: the write in flight was rolled back and nothing was "
                             "lost; free space and rerun")
        if "readonly" in low or "read-only" in low or "permission denied" in low:
            return StoreUnavailable(
                f"the scene store at {self.where} is read-only, and embedded Chroma must write its files even to "
                f"read: make {self.data_dir} writable, copy it somewhere writable, or serve it with "
                f"`chroma run --path {self.where}` and pass --store-url")
        return StoreDamaged(f"the scene store at {self.where} is damaged ({text}): run {self._cli('check')} to see "
                            f"what, then {self._cli('repair')}")

    def _no_space(self) -> bool:
        """Chroma reports a full disk in its compaction as a failed write, without the cause: look at the disk."""
        if self.store_url:
            return False
        try:
            st = os.statvfs(self.data_dir)
        except OSError:
            return False
        return st.f_bavail * st.f_frsize < NEARLY_FULL_BYTES

    @contextmanager
    def _chroma(self) -> Iterator[None]:
        try:
            yield
        except SceneMindError:
            raise
        except Exception as exc:
            raise self.translate(exc) from exc
        except BaseException as exc:  # a Rust panic inside chromadb arrives as pyo3's PanicException
            if type(exc).__name__ != "PanicException":
                raise
            raise self.translate(exc) from exc

    # --- opening ---------------------------------------------------------------------------
    def _client(self, create: bool):
        import chromadb
        from chromadb.config import Settings

        settings = Settings(anonymized_telemetry=False)
        if self.store_url:
            url = urlparse(self.store_url if "://" in self.store_url else f"http://{self.store_url}")
            try:
                client = chromadb.HttpClient(host=url.hostname or "127.0.0.1", port=url.port or 8000,
                                             settings=settings)
                client.heartbeat()
            except Exception as exc:  # the client raises several unrelated types for "down"
                raise StoreUnavailable(f"Chroma server at {self.store_url} is not reachable ({exc}); start it with "
                                       f"`chroma run --path DIR --host 127.0.0.1 --port {url.port or 8000}`") from exc
            return client
        if not self.data_dir.exists() and not create:
            raise StoreUnavailable(f"no scene store at {self.data_dir}: run `scenemind ingest FILE...` first "
                                   "or point SCENEMIND_DATA_DIR at an existing store")
        with self._chroma():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            return chromadb.PersistentClient(path=self.where, settings=settings)

    def _identity(self) -> dict[str, Any]:
        meta: dict[str, Any] = {"embedder": self.embedder_name, "dim": self.dim}
        if self.fingerprint is not None:
            meta["fingerprint"] = encode_fingerprint(self.fingerprint)
        return meta

    def identity(self) -> dict[str, str]:
        """What a couplings database records of the memory it describes (`CouplingIndex.bind`): the embedder
        as the scenes collection records it, and that collection's id. The id is the same for every process
        and machine reading this store, whatever URL they reach it by; another server, another store or
        another collection has another (a store repair that rebuilds the collection records the new one).
        `store` names where it is, for messages only (a server's URL without a password, or the folder)."""
        from adapters.postgres import redact

        col = self.collections["scenes"]
        meta = col.metadata or {}
        return {"embedder": str(meta.get("embedder", self.embedder_name)), "dim": str(meta.get("dim", self.dim)),
                "scenes_collection": str(col.id), "store": redact(self.where)}

    def _find(self, name: str):
        from chromadb.errors import NotFoundError

        with self._chroma():
            try:
                return self.client.get_collection(name, embedding_function=None)
            except (NotFoundError, ValueError):
                return None

    def _names(self) -> set[str]:
        with self._chroma():
            return {c.name if hasattr(c, "name") else c for c in self.client.list_collections()}

    def _collection(self, kind: str):
        name = f"scenemind_{kind}"
        col = self._find(name)
        if col is not None:
            self._check_identity(col)
            return col
        # Created under the writer lock: concurrent first opens must not race to create the same collection.
        with self.lock.hold(f"creation of the {kind} collection", wait_s=30), self._chroma():
            return self.client.get_or_create_collection(name, embedding_function=None, metadata=self._identity(),
                                                        configuration={"hnsw": HNSW})

    def _check_identity(self, col) -> None:
        meta = col.metadata or {}
        built = f"{meta.get('embedder')!r} (dim {meta.get('dim')})"
        here = f"{self.embedder_name!r} (dim {self.dim})"
        remedy = "use the embedder that built it (SCENEMIND_EMBEDDER) or ingest into a fresh data dir"
        if int(meta.get("dim", -1)) != self.dim:
            raise EmbedderMismatch(f"this store was built with embedder {built}, but {here} is configured: {remedy}")
        recorded = decode_fingerprint(meta.get("fingerprint"), self.dim)
        if recorded is not None and self.fingerprint is not None:
            if not fingerprints_agree(recorded, self.fingerprint):
                raise EmbedderMismatch(
                    f"this store was built with embedder {built}, and the configured {here} puts the same texts "
                    f"elsewhere in the space (other weights behind a name): {remedy}")
            return
        if meta.get("embedder") != self.embedder_name:
            raise EmbedderMismatch(f"this store was built with embedder {built}, but {here} is configured: {remedy}")
        if recorded is None and self.fingerprint is not None:
            # A store from before fingerprints: record this embedder's now, so later opens compare vectors.
            try:
                with self.lock.hold("fingerprint record", wait_s=2), self._chroma():
                    col.modify(metadata={**meta, "fingerprint": encode_fingerprint(self.fingerprint)})
            except SceneMindError as exc:  # a read-only or busy store still reads; the next open records it
                log.info("embedder fingerprint not recorded in %s: %s", self.where, exc)

    # --- reading ---------------------------------------------------------------------------
    def count(self, kind: str = "scenes") -> int:
        with self._chroma():
            return self.collections[kind].count()

    def all_ids(self, kind: str = "scenes") -> list[str]:
        """Every id of a collection, read in pages."""
        col, out = self.collections[kind], []
        with self._chroma():
            while True:
                page = col.get(include=[], limit=ADD_BATCH, offset=len(out))["ids"]
                out.extend(page)
                if len(page) < ADD_BATCH:
                    return out

    def existing_ids(self, ids: Sequence[str], kind: str = "scenes") -> set[str]:
        col, found = self.collections[kind], set()
        with self._chroma():
            for start in range(0, len(ids), ADD_BATCH):
                found.update(col.get(ids=list(ids[start : start + ADD_BATCH]), include=[])["ids"])
        return found

    def readable(self, ids: Sequence[str], kind: str = "scenes") -> tuple[dict[str, dict[str, Any]], list[str]]:
        """(id -> {"text", "meta", "vector"} for the ids whose vector reads back, the ids whose vector does not).

        Batches that fail are split until the unreadable ids are found, so one damaged vector costs a
        few extra reads, not a failed ingest.
        """
        good: dict[str, dict[str, Any]] = {}
        bad: list[str] = []

        def read(chunk: list[str]) -> None:
            try:
                good.update(self.get(chunk, kind=kind, vectors=True))
            except StoreDamaged:
                if len(chunk) == 1:
                    bad.append(chunk[0])
                    return
                half = len(chunk) // 2
                read(chunk[:half])
                read(chunk[half:])

        for start in range(0, len(ids), READ_BATCH):
            read(list(ids[start : start + READ_BATCH]))
        return good, bad

    def documents(self, ids: Sequence[str], kind: str = "scenes") -> dict[str, dict[str, Any]]:
        """id -> {"text", "meta"}: what survives of a scene when its vector does not (no vector read)."""
        out: dict[str, dict[str, Any]] = {}
        with self._chroma():
            for start in range(0, len(ids), READ_BATCH):
                res = self.collections[kind].get(ids=list(ids[start : start + READ_BATCH]),
                                                 include=["documents", "metadatas"])
                for n, sid in enumerate(res["ids"]):
                    out[sid] = {"text": res["documents"][n] or "", "meta": res["metadatas"][n] or {}}
        return out

    def nearest(self, vectors: np.ndarray, k: int, kind: str = "scenes") -> list[list[tuple[str, float, str, dict]]]:
        """For each query vector, up to k (id, cosine, document, metadata), best first."""
        if len(vectors) == 0:
            return []
        # No count() first: a query on a smaller (or empty) collection just returns fewer hits.
        res = self._query(kind, np.asarray(vectors, dtype=np.float32), k, ["documents", "metadatas", "distances"])
        if res is None:
            return [[] for _ in range(len(vectors))]
        return [
            [(i, 1.0 - float(d), doc or "", meta or {}) for i, d, doc, meta in zip(ids, dists, docs, metas)]
            for ids, dists, docs, metas in zip(res["ids"], res["distances"], res["documents"], res["metadatas"])
        ]

    def nearest_ids(self, vector: np.ndarray, k: int, kind: str = "scenes") -> list[tuple[str, float]]:
        """Up to k (id, cosine), best first: the cheap query, for callers that cache documents."""
        res = self._query(kind, np.asarray(vector, dtype=np.float32)[None, :], k, ["distances"])
        if res is None:
            return []
        return [(i, 1.0 - float(d)) for i, d in zip(res["ids"][0], res["distances"][0])]

    def _query(self, kind: str, vectors: np.ndarray, k: int, include: list[str]) -> dict | None:
        """A query, or None when a collection that another process just created has nothing on disk yet."""
        try:
            with self._chroma():
                return self.collections[kind].query(query_embeddings=vectors, n_results=k, include=include)
        except StoreDamaged as exc:
            # An empty collection whose segment another process has not flushed yet reads as "nothing
            # found on disk": that is an empty collection, not damage.
            if "nothing found on disk" in str(exc).lower() and (kind != "scenes" or self.count(kind) == 0):
                return None
            raise

    def get(self, ids: Sequence[str], kind: str = "scenes", vectors: bool = False) -> dict[str, dict[str, Any]]:
        """id -> {"text", "meta"[, "vector"]} for the ids that exist."""
        if not ids:
            return {}
        include = ["documents", "metadatas"] + (["embeddings"] if vectors else [])
        with self._chroma():
            res = self.collections[kind].get(ids=list(ids), include=include)
        out = {}
        for n, sid in enumerate(res["ids"]):
            item = {"text": res["documents"][n], "meta": res["metadatas"][n] or {}}
            if vectors:
                item["vector"] = np.asarray(res["embeddings"][n], dtype=np.float32)
            out[sid] = item
        return out

    # --- writing ---------------------------------------------------------------------------
    def upsert(self, ids: Sequence[str], vectors: np.ndarray, documents: Sequence[str],
               metadatas: Sequence[dict[str, Any]], kind: str = "scenes") -> bool:
        """Write; True when written. Scenes are written by an ingest that holds the writer lock already.

        A write-back of formulas, fields or crystals waits a few seconds for a running ingest and is
        skipped (with a log line) when it cannot have the lock: they are recomputed by the next run.
        """
        if kind == "scenes":
            with self.lock.hold("ingest"):
                self._upsert(self.collections[kind], ids, vectors, documents, metadatas)
            return True
        try:
            with self.lock.hold(f"write-back of {kind}", wait_s=WRITE_BACK_WAIT_S):
                self._upsert(self.collections[kind], ids, vectors, documents, metadatas)
        except StoreBusy as exc:
            log.warning("%s skipped: %s", kind, exc)
            return False
        return True

    def _upsert(self, col, ids: Sequence[str], vectors: np.ndarray, documents: Sequence[str],
                metadatas: Sequence[dict[str, Any]]) -> None:
        with self._chroma():
            for start in range(0, len(ids), ADD_BATCH):
                end = start + ADD_BATCH
                col.upsert(
                    ids=list(ids[start:end]),
                    embeddings=np.asarray(vectors[start:end], dtype=np.float32),
                    documents=list(documents[start:end]),
                    metadatas=[_clean_meta(m) for m in metadatas[start:end]],
                )

    def delete(self, ids: Sequence[str], kind: str = "scenes") -> None:
        """Remove ids (absent ones are ignored); the caller holds the writer lock."""
        with self.lock.hold(f"removal of {kind}"), self._chroma():
            for start in range(0, len(ids), ADD_BATCH):
                self.collections[kind].delete(ids=list(ids[start : start + ADD_BATCH]))

    def update_meta(self, ids: Sequence[str], metadatas: Sequence[dict[str, Any]], kind: str = "scenes") -> None:
        """Merge metadata into stored items without touching their vectors or text; the caller holds the lock."""
        with self.lock.hold(f"update of {kind}"), self._chroma():
            for start in range(0, len(ids), ADD_BATCH):
                self.collections[kind].update(ids=list(ids[start : start + ADD_BATCH]),
                                              metadatas=[_clean_meta(m) for m in metadatas[start : start + ADD_BATCH]])

    def ids_where(self, where: dict[str, Any], kind: str = "scenes") -> dict[str, dict[str, Any]]:
        """id -> metadata of the items a Chroma metadata filter selects, read in pages."""
        out: dict[str, dict[str, Any]] = {}
        with self._chroma():
            while True:
                page = self.collections[kind].get(where=where, include=["metadatas"], limit=ADD_BATCH,
                                                  offset=len(out))
                out.update((sid, meta or {}) for sid, meta in zip(page["ids"], page["metadatas"]))
                if len(page["ids"]) < ADD_BATCH:
                    return out

    def rebuild(self, kind: str, items: dict[str, dict[str, Any]]) -> None:
        """Replace a collection by a fresh one holding `items` (id -> text, meta, vector); the caller holds the lock.

        The new collection is filled under a side name first and renamed last, so a repair killed
        half-way leaves the old collection (or the complete new one) in place, never half of one.
        """
        name, side = f"scenemind_{kind}", f"scenemind_{kind}.rebuild"
        with self._chroma():
            if side in self._names():
                self.client.delete_collection(side)
            fresh = self.client.create_collection(side, embedding_function=None, metadata=self._identity(),
                                                  configuration={"hnsw": HNSW})
        ids = list(items)
        if ids:
            self._upsert(fresh, ids, np.stack([items[i]["vector"] for i in ids]),
                         [items[i]["text"] for i in ids], [items[i]["meta"] for i in ids])
        with self._chroma():
            if name in self._names():
                self.client.delete_collection(name)
            fresh.modify(name=name)
            self.collections[kind] = self.client.get_collection(name, embedding_function=None)

    def finish_rebuild(self) -> list[str]:
        """Kinds whose rebuild was killed after the old collection went: rename the complete new one in place."""
        done = []
        names = self._names()
        for kind in KINDS:
            name, side = f"scenemind_{kind}", f"scenemind_{kind}.rebuild"
            if side in names:
                with self._chroma():
                    if name in names and self.collections[kind].count() == 0:
                        self.client.delete_collection(name)
                        names.discard(name)
                    if name not in names:
                        self.client.get_collection(side, embedding_function=None).modify(name=name)
                        done.append(kind)
                    else:
                        self.client.delete_collection(side)
                    self.collections[kind] = self.client.get_collection(name, embedding_function=None)
        return done


def _clean_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """Chroma metadata takes scalars and non-empty lists only."""
    out: dict[str, Any] = {}
    for key, value in meta.items():
        if value is None or (isinstance(value, list) and not value):
            continue
        out[key] = value if isinstance(value, (str, int, float, bool, list)) else str(value)
    return out
