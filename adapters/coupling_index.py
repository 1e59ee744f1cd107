"""The couplings index: which scenes hold which entities and terms, and the graph they form.

Persisted in a SQLite file beside the store (one writer at a time, any number of
readers, atomic commits, so a killed ingest never leaves half a scene). Each
process keeps an in-memory `CouplingGraph` built from it and topped up with the
rows added since (by rowid), so a query never waits for a full rebuild after an
ingest elsewhere.

The graph is bipartite: scene <-> entity node, weighted by rarity (IDF), so an
entity shared by 3 scenes couples more than one shared by 300; plus a BM25
term index. Resonance spreads activation over it with personalised PageRank.
The index also keeps the first two moments of the scene vectors, so a dense
cosine can be put on a z-scale exactly without holding every vector.
"""

from __future__ import annotations

import math
import os
import re
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import numpy as np
import scipy.sparse as sp

from state.errors import SceneMindError, StoreBusy, StoreDamaged, StoreFull, StoreUnavailable
from adapters.lexicon import capitalised_spans, is_stop, norm, title_aliases, words

SCHEMA = """
CREATE TABLE IF NOT EXISTS scene (n INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, title TEXT);
CREATE TABLE IF NOT EXISTS scene_key (scene_id TEXT NOT NULL, key TEXT NOT NULL, tf INTEGER NOT NULL DEFAULT 1,
                                      PRIMARY KEY (scene_id, key));
CREATE INDEX IF NOT EXISTS scene_key_by_key ON scene_key (key);
CREATE TABLE IF NOT EXISTS moments (id INTEGER PRIMARY KEY CHECK (id = 1), count INTEGER, dim INTEGER,
                                    total BLOB, outer BLOB);
"""
BM25_K1, BM25_B = 1.2, 0.75
# 3: Russian keys are lemmas (adapters/lexicon.py); an older index keys Russian by surface form.
SCHEMA_VERSION = 3


@dataclass
class SceneRow:
    """What the index keeps of one scene: its keys with counts, and its vector (for the moments)."""

    id: str
    title: str | None
    keys: dict[str, int]
    vector: np.ndarray


class CouplingIndex:
    """The index file. Opened read-only unless `writable` (an ingest or a repair); `make_writable` upgrades."""

    def __init__(self, path: Path | str, writable: bool = True, data_dir: Path | str | None = None):
        self.path = Path(path)
        self.data_dir = Path(data_dir) if data_dir is not None else self.path.parent
        self._lock = threading.RLock()
        self._graph = CouplingGraph()
        self.writable = writable
        self._db = self._open(writable)

    # --- opening ---------------------------------------------------------------------------
    def _open(self, writable: bool) -> sqlite3.Connection:
        with self._sql():
            if writable:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                db = sqlite3.connect(str(self.path), check_same_thread=False, timeout=30)
                db.execute("PRAGMA journal_mode=WAL")
                self._check_version(db)
                db.executescript(SCHEMA)
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                return db
            if not self.path.exists() or self.path.stat().st_size == 0:
                return self._empty()  # no index (or a 0-byte one) reads as an empty index; open's check names it
            db = self._connect_read_only()
            if not db.execute("SELECT 1 FROM sqlite_master WHERE name = 'scene'").fetchone():
                db.close()
                return self._empty()
            self._check_version(db)
            return db

    def _connect_read_only(self) -> sqlite3.Connection:
        """Read without writing a byte: mode=ro, or immutable when not even the WAL's -shm can be made."""
        uri = "file:" + quote(str(self.path.resolve()))
        db = sqlite3.connect(f"{uri}?mode=ro", uri=True, check_same_thread=False, timeout=30)
        try:
            db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
            return db
        except sqlite3.OperationalError as exc:
            if "unable to open" not in str(exc) and "readonly" not in str(exc):
                raise
            db.close()
        # A read-only folder: SQLite cannot create the WAL's -shm, so no one can be writing either.
        return sqlite3.connect(f"{uri}?immutable=1", uri=True, check_same_thread=False)

    @staticmethod
    def _empty() -> sqlite3.Connection:
        db = sqlite3.connect(":memory:", check_same_thread=False)
        db.executescript(SCHEMA)
        return db

    def _check_version(self, db: sqlite3.Connection) -> None:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        has_tables = db.execute("SELECT 1 FROM sqlite_master WHERE name = 'scene'").fetchone()
        if has_tables and version != SCHEMA_VERSION:
            raise StoreUnavailable(f"{self.path} was written by another scenemind version (couplings schema "
                                   f"{version}, this one reads {SCHEMA_VERSION}): run `scenemind --data-dir "
                                   f"{self.data_dir} repair` to rebuild it from the stored scenes")

    def make_writable(self) -> None:
        """Reopen for writing (an ingest in a process that opened the index to read)."""
        with self._lock:
            if not self.writable:
                self._db.close()
                self._db = self._open(True)
                self.writable = True
                self._graph = CouplingGraph()

    @contextmanager
    def _sql(self) -> Iterator[None]:
        """SQLite's errors as one domain error naming this file and the remedy."""
        try:
            yield
        except sqlite3.Error as exc:
            raise self.translate(exc) from exc

    def translate(self, exc: sqlite3.Error) -> SceneMindError:
        text = str(exc)
        repair = f"`scenemind --data-dir {self.data_dir} repair`"
        if "full" in text:
            return StoreFull(f"disk full at {self.path}: the batch in flight was rolled back and nothing was lost; "
                             "free space and rerun")
        if "readonly" in text or "read-only" in text:
            return StoreUnavailable(f"{self.path} is read-only: an ingest or a repair must write it; make it "
                                    "writable (asking only reads and works on a read-only index)")
        if "locked" in text or "busy" in text:
            return StoreBusy(f"{self.path} is locked by another process ({text}): wait for it and rerun")
        return StoreDamaged(f"the couplings index {self.path} is damaged ({text}): run {repair} "
                            "(it rebuilds the index from the scene store)")

    # --- writing -------------------------------------------------------------------------
    def add(self, rows: Iterable[SceneRow]) -> int:
        """Add scenes in one transaction (skipping ids already present); returns scenes added."""
        self.make_writable()
        with self._lock, self._sql(), self._db:
            rows = list(rows)
            present = self.existing_ids([r.id for r in rows])
            fresh = [r for r in rows if r.id not in present]
            if not fresh:
                return 0
            self._db.executemany("INSERT INTO scene (id, title) VALUES (?, ?)", [(r.id, r.title) for r in fresh])
            self._db.executemany("INSERT OR IGNORE INTO scene_key (scene_id, key, tf) VALUES (?, ?, ?)",
                                 [(r.id, k, tf) for r in fresh for k, tf in r.keys.items()])
            self._add_moments(np.stack([r.vector for r in fresh]).astype(np.float64))
        return len(fresh)

    def rebuild(self, batches: Iterable[list[SceneRow]]) -> int:
        """Replace the whole index by one built from `batches`; the caller holds the writer lock.

        Built beside the old file and moved over it last, so a repair killed half-way leaves the old
        index in place.
        """
        side = self.path.with_name(self.path.name + ".rebuild")
        for extra in (side, Path(f"{side}-wal"), Path(f"{side}-shm")):
            extra.unlink(missing_ok=True)
        fresh = CouplingIndex(side, writable=True, data_dir=self.data_dir)
        added = sum(fresh.add(batch) for batch in batches)
        with fresh._sql():
            fresh._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            fresh._db.execute("PRAGMA journal_mode=DELETE")  # one self-contained file to move
        fresh.close()
        with self._lock:
            self._db.close()
            # The old WAL must not be replayed into the new file.
            for extra in (Path(f"{self.path}-wal"), Path(f"{self.path}-shm")):
                extra.unlink(missing_ok=True)
            os.replace(side, self.path)
            self._db = self._open(True)
            self.writable = True
            self._graph = CouplingGraph()
        return added

    def _add_moments(self, vectors: np.ndarray) -> None:
        dim = vectors.shape[1]
        count, total, outer = self._read_moments() or (0, np.zeros(dim), np.zeros((dim, dim)))
        total, outer = total + vectors.sum(0), outer + vectors.T @ vectors
        self._db.execute("INSERT OR REPLACE INTO moments VALUES (1, ?, ?, ?, ?)",
                         (count + len(vectors), vectors.shape[1], total.tobytes(), outer.tobytes()))

    def _read_moments(self) -> tuple[int, np.ndarray, np.ndarray] | None:
        """(count, sum of vectors, sum of outer products), or None before the first scene."""
        row = self._db.execute("SELECT count, dim, total, outer FROM moments WHERE id = 1").fetchone()
        if row is None:
            return None
        count, d, total, outer = row
        return count, np.frombuffer(total, dtype=np.float64).copy(), np.frombuffer(outer, dtype=np.float64).reshape(d, d).copy()

    # --- reading -------------------------------------------------------------------------
    def _select_in(self, sql: str, ids: Sequence[str]) -> Iterator[tuple]:
        """Rows of `sql` (whose `{in}` marks an IN list) for the ids, 500 at a time (SQLite's bound on parameters)."""
        for start in range(0, len(ids), 500):
            chunk = list(ids[start : start + 500])
            with self._lock, self._sql():
                rows = self._db.execute(sql.format(marks=",".join("?" * len(chunk))), chunk).fetchall()
            yield from rows

    def existing_ids(self, ids: Sequence[str]) -> set[str]:
        return {row[0] for row in self._select_in("SELECT id FROM scene WHERE id IN ({marks})", ids)}

    def all_ids(self) -> list[str]:
        with self._lock, self._sql():
            return [row[0] for row in self._db.execute("SELECT id FROM scene ORDER BY n")]

    def count(self) -> tuple[int, int]:
        """(scenes, couplings)."""
        with self._lock, self._sql():
            scenes = self._db.execute("SELECT COUNT(*) FROM scene").fetchone()[0]
            links = self._db.execute("SELECT COUNT(*) FROM scene_key").fetchone()[0]
        return scenes, links

    def graph(self) -> CouplingGraph:
        """The in-memory coupling graph, topped up with scenes added since the last call."""
        with self._lock, self._sql():
            last = self._db.execute("SELECT COALESCE(MAX(n), 0) FROM scene").fetchone()[0]
            if last > self._graph.loaded_n:
                new = self._db.execute("SELECT n, id, title FROM scene WHERE n > ? ORDER BY n",
                                       (self._graph.loaded_n,)).fetchall()
                keys: dict[str, dict[str, int]] = {sid: {} for _, sid, _ in new}
                for sid, key, tf in self._select_in("SELECT scene_id, key, tf FROM scene_key WHERE scene_id IN ({marks})",
                                                    [sid for _, sid, _ in new]):
                    keys[sid][key] = tf
                for _, sid, title in new:
                    self._graph.add(sid, title, keys[sid])
                self._graph.loaded_n = last
                moments = self._read_moments()
                if moments is not None:
                    self._graph.set_moments(*moments)
            return self._graph.ready()

    def close(self) -> None:
        self._db.close()


class CouplingGraph:
    """Scenes <-> entity nodes (IDF-weighted) + a BM25 term index, with matrices built lazily.

    `add` is O(keys of the scene); the sparse matrices that depend on global statistics
    (IDF, average length) are rebuilt in O(nnz) on the first query after a batch of adds.
    """

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.position: dict[str, int] = {}
        self.titles: list[str | None] = []
        self.scene_entities: list[list[int]] = []
        self.scene_terms: list[dict[int, int]] = []
        self.entity_id: dict[str, int] = {}
        self.entity_names: list[str] = []
        self.entity_df: list[int] = []
        self.term_id: dict[str, int] = {}
        self.term_df: list[int] = []
        self.title_index: dict[str, list[int]] = {}
        self.loaded_n = 0
        self.mean: np.ndarray | None = None
        self.second: np.ndarray | None = None
        self._dirty = True

    @property
    def n(self) -> int:
        return len(self.ids)

    def add(self, scene_id: str, title: str | None, keys: dict[str, int]) -> None:
        pos = len(self.ids)
        self.ids.append(scene_id)
        self.position[scene_id] = pos
        self.titles.append(title)
        entities, terms = [], {}
        for key, tf in keys.items():
            if key.startswith("e:"):
                eid = self.entity_id.setdefault(key[2:], len(self.entity_names))
                if eid == len(self.entity_names):
                    self.entity_names.append(key[2:])
                    self.entity_df.append(0)
                self.entity_df[eid] += 1
                entities.append(eid)
            elif key.startswith("t:"):
                tid = self.term_id.setdefault(key[2:], len(self.term_df))
                if tid == len(self.term_df):
                    self.term_df.append(0)
                self.term_df[tid] += 1
                terms[tid] = tf
        self.scene_entities.append(entities)
        self.scene_terms.append(terms)
        for alias in title_aliases(title) if title else []:
            self.title_index.setdefault(alias, []).append(pos)
        self._dirty = True

    def set_moments(self, count: int, total: np.ndarray, outer: np.ndarray) -> None:
        if count:
            self.mean, self.second = total / count, outer / count

    def ready(self) -> CouplingGraph:
        if self._dirty:
            self._build()
        return self

    def _build(self) -> None:
        n, m = self.n, len(self.entity_names)
        self.entity_idf = np.log(max(n, 1) / np.maximum(np.array(self.entity_df, dtype=float), 1.0))
        rows = [i for i, es in enumerate(self.scene_entities) for _ in es]
        cols = [e for es in self.scene_entities for e in es]
        w = sp.csr_matrix((self.entity_idf[cols] if cols else [], (rows, cols)), shape=(n, m))
        # Spreading: scene -> entity in proportion to rarity, entity -> scene uniformly.
        self.scene_to_entity = (sp.diags(1.0 / np.maximum(np.asarray(w.sum(1)).ravel(), 1e-12)) @ w).T.tocsr()
        self.entity_to_scene = (sp.diags(1.0 / np.maximum(np.asarray(w.sum(0)).ravel(), 1e-12)) @ w.T).T.tocsr()
        self.holders = w.tocsc()
        lengths = np.array([sum(t.values()) for t in self.scene_terms], dtype=float)
        avg = lengths.mean() if n else 1.0
        r, c, v = [], [], []
        for i, terms in enumerate(self.scene_terms):
            den = BM25_K1 * (1 - BM25_B + BM25_B * lengths[i] / max(avg, 1e-9))
            for t, f in terms.items():
                r.append(i)
                c.append(t)
                v.append(f * (BM25_K1 + 1) / (f + den))
        self.term_matrix = sp.csc_matrix((v, (r, c)), shape=(n, len(self.term_df)))
        df = np.array(self.term_df, dtype=float)
        self.term_idf = np.log(1 + (n - df + 0.5) / (df + 0.5))
        self._dirty = False

    # --- query-time primitives -----------------------------------------------------------
    def idf(self, entity: str) -> float:
        eid = self.entity_id.get(entity)
        return math.log(max(self.n, 1)) if eid is None else float(self.entity_idf[eid])

    def df(self, entity: str) -> int:
        eid = self.entity_id.get(entity)
        return 0 if eid is None else self.entity_df[eid]

    def dense_moments(self, vector: np.ndarray) -> tuple[float, float]:
        """Mean and standard deviation of cos(vector, scene) over every scene, from the stored moments."""
        if self.mean is None or self.second is None:
            return 0.0, 1.0
        v = vector.astype(np.float64)
        mean = float(v @ self.mean)
        return mean, math.sqrt(max(float(v @ self.second @ v) - mean * mean, 1e-12))

    def bm25(self, terms: Iterable[str]) -> np.ndarray:
        ids = [self.term_id[t] for t in set(terms) if t in self.term_id]
        if not ids or self.n == 0:
            return np.zeros(self.n)
        return np.asarray(self.term_matrix[:, ids] @ self.term_idf[ids]).ravel()

    def entity_bonus(self, entities: dict[str, float], title_weight: float, mention_weight: float) -> np.ndarray:
        """A scene titled by a query entity gets title_weight; each mention adds its scaled rarity."""
        bonus = np.zeros(self.n)
        log_n = math.log(max(self.n, 2))
        for entity, weight in entities.items():
            for pos in self.title_index.get(entity, []):
                bonus[pos] = max(bonus[pos], title_weight)
            eid = self.entity_id.get(entity)
            if eid is not None and mention_weight:
                bonus[self.holders[:, eid].indices] += mention_weight * weight / log_n
        return bonus

    def spread(self, seed_scenes: dict[int, float], seed_entities: dict[str, float],
               restart: float, iterations: int) -> np.ndarray:
        """Personalised PageRank over scene <-> entity couplings; activation per scene (uniform = 1/n)."""
        ps, pe = np.zeros(self.n), np.zeros(len(self.entity_names))
        for pos, w in seed_scenes.items():
            ps[pos] += w
        for entity, w in seed_entities.items():
            eid = self.entity_id.get(entity)
            if eid is not None:
                pe[eid] += w
        total = ps.sum() + pe.sum()
        if total <= 0:
            return np.zeros(self.n)
        ps, pe = ps / total, pe / total
        xs, xe = ps.copy(), pe.copy()
        for _ in range(iterations):
            xs, xe = ((1 - restart) * (self.entity_to_scene @ xe) + restart * ps,
                      (1 - restart) * (self.scene_to_entity @ xs) + restart * pe)
        return xs

    def query_entities(self, question: str, max_ngram: int = 12) -> dict[str, float]:
        """The question's entities, resolved against memory, each weighted by rarity.

        Capitalised spans, plus the longest n-grams of the question that are known entity
        nodes and hold a non-initial capitalised word or a number (so "country" is not an
        entity, but "Alexander and the Terrible, Horrible, No Good, Very Bad Day" is).
        """
        found: dict[str, float] = {}
        for span in capitalised_spans(question):
            key = norm(span)
            if not key or is_stop(key):
                continue
            if len(key.split()) == 1 and question.lstrip().startswith(span) and key not in self.entity_id:
                continue  # a sentence-initial word that memory does not know
            found[key] = self.idf(key)
        raw = [w for w in words(question) if norm(w)]
        tokens = [norm(w) for w in raw]
        marked = [(w[0].isupper() and i > 0) or w[0].isdigit() for i, w in enumerate(raw)]
        for size in range(min(max_ngram, len(tokens)), 0, -1):
            for start in range(len(tokens) - size + 1):
                if not any(marked[start : start + size]):
                    continue
                gram = " ".join(tokens[start : start + size])
                if is_stop(gram) or gram not in self.entity_id:
                    continue
                if any(re.search(r"\b" + re.escape(gram) + r"\b", f) for f in found):
                    continue  # inside a longer match
                found[gram] = self.idf(gram)
        return found

    def entities_of(self, pos: int) -> list[str]:
        return [self.entity_names[e] for e in self.scene_entities[pos]]
