"""The couplings index: which scenes hold which entities and terms, and the graph they form.

Persisted in a SQLite file beside the store (one writer at a time, any number of
readers, atomic commits, so a killed ingest never leaves half a scene). Each
process keeps an in-memory `CouplingGraph` built from it and caught up with the
rows added since (by rowid) and the scenes removed since (by the removal log), so
a query never waits for a full rebuild after an ingest or a forget elsewhere.

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
import sys
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from urllib.parse import quote

import numpy as np
import scipy.sparse as sp

from state.errors import SceneMindError, StoreBusy, StoreDamaged, StoreFull, StoreUnavailable
from adapters.coupling_spread import Couplings, local_spread
from adapters.lexicon import capitalised_spans, is_stop, norm, title_aliases, words

# scene_key holds integers: the scene's row number in `scene` and the key's id in `key_name` (the key text once
# per distinct key). At 1M scenes the text form was 61M (scene id, key text) rows, a 7.7 GB file, and reading
# them as Python strings was half of a cold graph load. WITHOUT ROWID: the table is its primary key's b-tree
# (a rowid table keeps the rows and a copy of the key in an index). Nothing queries by key, so no key index.
SCHEMA = """
CREATE TABLE IF NOT EXISTS scene (n INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, title TEXT);
CREATE TABLE IF NOT EXISTS key_name (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS scene_key (scene INTEGER NOT NULL, key INTEGER NOT NULL, tf INTEGER NOT NULL DEFAULT 1,
                                      PRIMARY KEY (scene, key)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS moments (id INTEGER PRIMARY KEY CHECK (id = 1), count INTEGER, dim INTEGER,
                                    total BLOB, "outer" BLOB);
CREATE TABLE IF NOT EXISTS removing (id TEXT PRIMARY KEY, vector BLOB);
CREATE TABLE IF NOT EXISTS removed (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
# The same tables in PostgreSQL (`--state-url`), whose `meta` also holds the schema version (SQLite: user_version).
# Serial numbers follow commit order because writers hold the memory's writer lock while they commit.
SCHEMA_POSTGRES = """
CREATE TABLE IF NOT EXISTS scene (n BIGSERIAL PRIMARY KEY, id TEXT NOT NULL UNIQUE, title TEXT);
CREATE TABLE IF NOT EXISTS key_name (id SERIAL PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS scene_key (scene BIGINT NOT NULL, key INTEGER NOT NULL, tf INTEGER NOT NULL DEFAULT 1,
                                      PRIMARY KEY (scene, key));
CREATE TABLE IF NOT EXISTS moments (id INTEGER PRIMARY KEY CHECK (id = 1), count BIGINT, dim INTEGER,
                                    total BYTEA, "outer" BYTEA);
CREATE TABLE IF NOT EXISTS removing (id TEXT PRIMARY KEY, vector BYTEA);
CREATE TABLE IF NOT EXISTS removed (seq BIGSERIAL PRIMARY KEY, id TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
BM25_K1, BM25_B = 1.2, 0.75
LOAD_BLOCK = 5_000  # scenes read into the graph at a time when it catches up (their rows as Python objects: ~60 MB)
# 3: Russian keys are lemmas (adapters/lexicon.py); an older index keys Russian by surface form.
# 4: scenes can be removed: `removing` journals a removal in flight (with the vector the moments must lose),
#    `removed` logs each one so other processes' graphs catch up. A schema-3 index gains both tables on open.
# 5: scene_key holds (scene row number, key id, count) and `key_name` the key texts. A writable open migrates a
#    schema-3/4 index in place (`_migrate_keys`); a read-only one reads its text rows as they are.
SCHEMA_VERSION = 5
MIGRATES = {3, 4}  # older versions this one opens (adding what it lacks); anything else is rebuilt by repair
MIGRATE_BLOCK = 20_000  # scenes whose rows a migration converts per statement (one step of its progress bar)
# What `meta` records of the memory the couplings describe (`SceneStore.identity`), compared on every open with a
# store; `store` (the URL it was recorded through, without a password, or the embedded store's folder) is only
# named in messages. SQLite needs it too: with `--store-url` and no `--state-url` the data dir's index describes a
# server's collection, and a data dir pointed at another server must not think with that server's scenes.
IDENTITY = ("embedder", "dim", "scenes_collection")


@dataclass
class SceneRow:
    """What the index keeps of one scene: its keys with counts, and its vector (for the moments)."""

    id: str
    title: str | None
    keys: dict[str, int]
    vector: np.ndarray


class HeldStill:
    """Readers of the in-memory graph against its catch-up: many threads read at once; a catch-up waits
    for them and holds new ones off while it changes the graph (a service answers requests on a thread
    pool while other processes change memory). Re-entrant for readers; a thread that reads never
    catches up itself, so it cannot wait on its own hold."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writers = 0
        self._local = threading.local()

    def reading_here(self) -> bool:
        return getattr(self._local, "depth", 0) > 0

    @contextmanager
    def read(self) -> Iterator[None]:
        depth = getattr(self._local, "depth", 0)
        if depth == 0:
            with self._cond:
                while self._writers:  # a waiting catch-up goes first, or a steady stream of readers starves it
                    self._cond.wait()
                self._readers += 1
        self._local.depth = depth + 1
        try:
            yield
        finally:
            self._local.depth = depth
            if depth == 0:
                with self._cond:
                    self._readers -= 1
                    self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._writers += 1
            try:
                while self._readers:
                    self._cond.wait()
                yield  # holding the condition's lock: no reader starts until the change is done
            finally:
                self._writers -= 1
                self._cond.notify_all()


def open_couplings(data_dir: Path | str, state_url: str = "", writable: bool = False) -> CouplingIndex:
    """The couplings index of a memory: `couplings.sqlite` in its data dir, or the PostgreSQL database
    `state_url` names (shared by processes on any machine)."""
    data = Path(data_dir)
    return CouplingIndex(data / "couplings.sqlite", writable=writable, data_dir=data, url=state_url)


class CouplingIndex:
    """The index file (or database). Opened read-only unless `writable` (an ingest or a repair); `make_writable`
    upgrades. With `url`, the same tables live in that PostgreSQL database instead of the file at `path`."""

    def __init__(self, path: Path | str, writable: bool = True, data_dir: Path | str | None = None, url: str = ""):
        self.path = Path(path)
        self.url = url
        self.data_dir = Path(data_dir) if data_dir is not None else self.path.parent
        self._lock = threading.RLock()
        self._graph = CouplingGraph()
        self._still = HeldStill()
        self.writable = writable
        self._text_keys = False  # a schema-3/4 index opened read-only: scene_key rows are (scene id, key text)
        self._identity: dict[str, str] | None = None  # the memory this process opened it for (`bind`)
        self._db = self._open(writable)

    @property
    def where(self) -> str:
        """The index's place, for messages: its file, or its database (without a password)."""
        if self.url:
            from adapters.postgres import redact

            return f"PostgreSQL {redact(self.url)}"
        return str(self.path)

    @property
    def _repair(self) -> str:
        from adapters.postgres import server_options

        return f"`scenemind --data-dir {self.data_dir}{server_options(state_url=self.url)} repair`"

    # --- opening ---------------------------------------------------------------------------
    def _open(self, writable: bool) -> sqlite3.Connection:
        if self.url:
            return self._open_postgres()
        with self._sql():
            if writable:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                db = sqlite3.connect(str(self.path), check_same_thread=False, timeout=30)
                db.execute("PRAGMA journal_mode=WAL")
                self._check_version(db)
                if _keys_as_text(db):
                    self._migrate_keys(db)
                db.executescript(SCHEMA)
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                self._text_keys = False
                return db
            if not self.path.exists() or self.path.stat().st_size == 0:
                return self._empty()  # no index (or a 0-byte one) reads as an empty index; open's check names it
            db = self._connect_read_only()
            if not db.execute("SELECT 1 FROM sqlite_master WHERE name = 'scene'").fetchone():
                db.close()
                return self._empty()
            self._check_version(db)
            # An older index is read as it is (a reader must not write, and may lack the right to): the next
            # writable open migrates it, and this reader's catch-up follows (`_catch_up` looks again).
            self._text_keys = _keys_as_text(db)
            return db

    def _open_postgres(self) -> sqlite3.Connection:
        """The tables in PostgreSQL, made if missing: readers make them too, so a process that opens before
        the first ingest still sees what later ingests (on any machine) write."""
        from adapters.postgres import SETUP_LOCK, SqlConnection

        db = SqlConnection(self.url)
        with self._sql():
            if db.execute("SELECT to_regclass('scene') IS NOT NULL").fetchone()[0]:
                self._check_version(db)
            with db:
                db.execute("SELECT pg_advisory_xact_lock(?, ?)", SETUP_LOCK)  # first opens must not race
                if _keys_as_text(db, postgres=True):  # any open migrates, as any open makes the tables
                    self._migrate_keys(db)
                db.executescript(SCHEMA_POSTGRES)
                # _check_version let only this version or an older one it migrates through
                db.execute("INSERT INTO meta VALUES ('schema', ?) ON CONFLICT (name) DO UPDATE SET value = "
                           "excluded.value", (str(SCHEMA_VERSION),))
        return db  # type: ignore[return-value]  # the slice of sqlite3's API the index uses

    def _migrate_keys(self, db: sqlite3.Connection) -> None:
        """A schema-3/4 scene_key (scene id, key text) rewritten as (scene number, key id), in one transaction.

        One transaction rather than a copy built beside and moved over (as `rebuild` does): a SIGKILL at any
        point leaves the old index whole (the rerun starts over), other processes keep their connection to
        the same file (a moved-over file would leave them reading the old one), and writers wait on the
        database's own lock meanwhile. SQLite then compacts the file (VACUUM, its own transaction: killed,
        the migrated file stays whole, only larger). In PostgreSQL it runs inside the caller's transaction,
        which holds SETUP_LOCK.
        """
        from tqdm import tqdm

        last, scenes = db.execute("SELECT COALESCE(MAX(n), 0), COUNT(*) FROM scene").fetchone()
        if not self.url:
            db.execute("BEGIN IMMEDIATE")  # writers wait from here: no scene can change under the copy
        try:
            db.execute("CREATE TABLE IF NOT EXISTS key_name " + (  # (executescript would commit first)
                "(id SERIAL PRIMARY KEY, name TEXT NOT NULL UNIQUE)" if self.url else
                "(id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE)"))
            db.execute("INSERT INTO key_name (name) SELECT DISTINCT key FROM scene_key")
            db.execute("CREATE TABLE scene_key_ids " + (
                "(scene BIGINT NOT NULL, key INTEGER NOT NULL, tf INTEGER NOT NULL DEFAULT 1, "
                "PRIMARY KEY (scene, key))" if self.url else
                "(scene INTEGER NOT NULL, key INTEGER NOT NULL, tf INTEGER NOT NULL DEFAULT 1, "
                "PRIMARY KEY (scene, key)) WITHOUT ROWID"))
            with tqdm(total=scenes, desc=f"couplings: migrating {self.where} to key ids", unit="scene",
                      file=sys.stderr, disable=not scenes) as bar:
                for low in range(0, last, MIGRATE_BLOCK):
                    high = low + MIGRATE_BLOCK
                    db.execute("INSERT INTO scene_key_ids (scene, key, tf) SELECT s.n, k.id, o.tf FROM scene s "
                               "JOIN scene_key o ON o.scene_id = s.id JOIN key_name k ON k.name = o.key "
                               "WHERE s.n > ? AND s.n <= ? ORDER BY s.n, k.id", (low, high))
                    bar.update(db.execute("SELECT COUNT(*) FROM scene WHERE n > ? AND n <= ?",
                                          (low, high)).fetchone()[0])
            db.execute("DROP TABLE scene_key")  # with its indexes (scene_key_by_key: nothing queried by key)
            db.execute("ALTER TABLE scene_key_ids RENAME TO scene_key")
            if not self.url:
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                db.execute("COMMIT")
        except BaseException:
            if not self.url and db.in_transaction:
                db.execute("ROLLBACK")
            raise
        if not self.url:
            print(f"couplings: compacting {self.path} (VACUUM)", file=sys.stderr)
            try:
                db.execute("VACUUM")  # the text rows' pages back to the file system
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.OperationalError as exc:  # busy or full: migrated and correct, only not compacted
                print(f"couplings: {self.path} migrated but not compacted ({exc})", file=sys.stderr)

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
        if self.url:
            row = (db.execute("SELECT value FROM meta WHERE name = 'schema'").fetchone()
                   if db.execute("SELECT to_regclass('meta') IS NOT NULL").fetchone()[0] else None)
            version, has_tables = int(row[0]) if row else 0, True
        else:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            has_tables = db.execute("SELECT 1 FROM sqlite_master WHERE name = 'scene'").fetchone()
        if has_tables and version != SCHEMA_VERSION and version not in MIGRATES:
            raise StoreUnavailable(f"{self.where} was written by another scenemind version (couplings schema "
                                   f"{version}, this one reads {SCHEMA_VERSION}): run {self._repair} to rebuild "
                                   "it from the stored scenes")

    # --- which memory ----------------------------------------------------------------------
    def bind(self, identity: dict[str, str]) -> None:
        """Refuse couplings that describe another memory (another embedder's scenes, another store or collection);
        record this memory's identity on a writable open when none is recorded yet (an index from before
        identities is adopted)."""
        self._identity = {k: identity[k] for k in (*IDENTITY, "store")}
        problem = self.identity_problem(self._identity)
        if problem:
            raise StoreUnavailable(problem)
        if self.writable:
            self._record_identity()

    def recorded_identity(self) -> dict[str, str]:
        if not self.url and not self._db.execute("SELECT 1 FROM sqlite_master WHERE name = 'meta'").fetchone():
            return {}  # an index from before identities, opened read-only
        keys = (*IDENTITY, "store")
        with self._lock, self._sql():
            rows = self._db.execute(f"SELECT name, value FROM meta WHERE name IN ({', '.join('?' * len(keys))})",
                                    keys).fetchall()
        return dict(rows)

    def identity_problem(self, identity: dict[str, str]) -> str | None:
        """Why these couplings do not describe the memory `identity` names, as one line; None when they do
        (or record nothing yet)."""
        recorded = self.recorded_identity()
        if not recorded or all(recorded.get(k) == identity.get(k) for k in IDENTITY):
            return None

        def side(ident: dict[str, str]) -> str:
            return (f"embedder {ident.get('embedder')!r} (dim {ident.get('dim')}), scenes collection "
                    f"{ident.get('scenes_collection')} at {ident.get('store')}")

        from adapters.postgres import server_options

        store = identity.get("store", "")
        server = store if "://" in store else ""  # an embedded store is named by its folder, not by an option
        if self.url:
            repair = f"`scenemind{server_options(server, self.url)} repair`"
            elsewhere = "point --state-url at another database"
        else:
            repair = f"`scenemind --data-dir {self.data_dir}{server_options(server)} repair`"
            elsewhere = "point --data-dir at the folder this store was ingested with"
        return (f"the couplings in {self.where} describe another memory ({side(recorded)}), not this store "
                f"({side(identity)}): {elsewhere}, or run {repair} to rebuild the couplings for this store")

    def _record_identity(self, replace: bool = False) -> None:
        """Write this memory's identity into `meta` (with `replace`, over another's: a repair rebuilt for it)."""
        if self._identity is None:
            return
        if not replace and self.recorded_identity():
            return
        conflict = "DO UPDATE SET value = excluded.value" if replace else "DO NOTHING"
        with self._lock, self._sql(), self._db:
            self._db.executemany(f"INSERT INTO meta VALUES (?, ?) ON CONFLICT (name) {conflict}",
                                 list(self._identity.items()))
        problem = self.identity_problem(self._identity)  # another first writer may have recorded its own
        if problem:
            raise StoreUnavailable(problem)

    def record_identity(self, identity: dict[str, str]) -> None:
        """Record `identity` over whatever was recorded (a repair that made these couplings describe it)."""
        self._identity = {k: identity[k] for k in (*IDENTITY, "store")}
        self._record_identity(replace=True)

    def make_writable(self) -> None:
        """Reopen for writing (an ingest in a process that opened the index to read).

        The graph is kept: it holds rows of this same file, so it catches up from where it is (resetting
        it made the first query after a 1,000-scene add to a 100k memory rebuild everything: 21.7 s).
        """
        with self._lock:
            if not self.writable:
                if not self.url:  # a database connection writes as it reads
                    self._db.close()
                    self._db = self._open(True)
                self.writable = True
                self._record_identity()  # a database from before identities is adopted by its next writer

    @contextmanager
    def _sql(self) -> Iterator[None]:
        """The database's errors as one domain error naming this file (or server) and the remedy."""
        try:
            yield
        except sqlite3.Error as exc:
            raise self.translate(exc) from exc
        except SceneMindError:
            raise
        except Exception as exc:
            if not self.url or type(exc).__module__.split(".")[0] != "psycopg":
                raise
            from adapters.postgres import translate

            raise translate(exc, self.url, self._repair) from exc

    def translate(self, exc: sqlite3.Error) -> SceneMindError:
        text = str(exc)
        repair = self._repair
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
            number = dict(self._select_in("SELECT id, n FROM scene WHERE id IN ({marks})", [r.id for r in fresh]))
            key_id = self._key_ids({k for r in fresh for k in r.keys})
            self._db.executemany("INSERT INTO scene_key (scene, key, tf) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                                 [(number[r.id], key_id[k], tf) for r in fresh for k, tf in r.keys.items()])
            self._add_moments(np.stack([r.vector for r in fresh]).astype(np.float64))
        return len(fresh)

    def _key_ids(self, names: set[str]) -> dict[str, int]:
        """Each key's id, new keys given the next ids. Only missing keys are inserted: an insert that meets a
        conflict still draws a number from PostgreSQL's sequence, and readers index their key maps by id."""
        found = dict(self._select_in("SELECT name, id FROM key_name WHERE name IN ({marks})", sorted(names)))
        missing = sorted(names - found.keys())
        if missing:
            self._db.executemany("INSERT INTO key_name (name) VALUES (?)", [(k,) for k in missing])
            found.update(self._select_in("SELECT name, id FROM key_name WHERE name IN ({marks})", missing))
        return found

    def journal_removal(self, vectors: dict[str, np.ndarray | None]) -> None:
        """Record scenes about to be removed, with the vectors the moments must lose (before the store forgets them).

        A removal killed after this point is finished by the next writer (`pending_removals`).
        """
        self.make_writable()
        with self._lock, self._sql(), self._db:
            self._db.executemany("INSERT INTO removing (id, vector) VALUES (?, ?) "
                                 "ON CONFLICT (id) DO UPDATE SET vector = excluded.vector",
                                 [(sid, None if v is None else np.asarray(v, dtype=np.float64).tobytes())
                                  for sid, v in vectors.items()])

    def pending_removals(self) -> list[str]:
        """Scenes whose removal was journaled but not finished (a killed forget or replace)."""
        with self._lock, self._sql():
            if not self._has_removals():
                return []
            return [row[0] for row in self._db.execute("SELECT id FROM removing ORDER BY id")]

    def remove(self, ids: Sequence[str]) -> int:
        """Finish journaled removals in one transaction: keys, scene rows, moments, the removal log; returns scenes removed.

        The moments lose exactly the journaled vectors of the scenes the index still held, so a rerun
        after a kill subtracts nothing twice.
        """
        self.make_writable()
        ids = list(dict.fromkeys(ids))
        with self._lock, self._sql(), self._db:
            present, vectors = [], []
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                marks = ",".join("?" * len(chunk))
                held = {row[0] for row in self._db.execute(f"SELECT id FROM scene WHERE id IN ({marks})", chunk)}
                present += [sid for sid in chunk if sid in held]
                vectors += [np.frombuffer(blob, dtype=np.float64) for sid, blob in self._db.execute(
                    f"SELECT id, vector FROM removing WHERE id IN ({marks})", chunk) if sid in held and blob is not None]
                held_chunk = [sid for sid in chunk if sid in held]
                if held_chunk:
                    marks = ",".join("?" * len(held_chunk))
                    # Its keys' names stay in key_name: a name no scene holds costs a row, never query time.
                    self._db.execute("DELETE FROM scene_key WHERE scene IN "
                                     f"(SELECT n FROM scene WHERE id IN ({marks}))", held_chunk)
                    self._db.execute(f"DELETE FROM scene WHERE id IN ({marks})", held_chunk)
            self._db.executemany("INSERT INTO removed (id) VALUES (?)", [(sid,) for sid in present])
            if vectors:
                self._add_moments(np.stack(vectors), sign=-1.0)
            if not self._db.execute("SELECT 1 FROM scene LIMIT 1").fetchone():
                self._db.execute("DELETE FROM moments")  # an empty memory has no moments, not float residue
            self._db.executemany("DELETE FROM removing WHERE id = ?", [(sid,) for sid in ids])
        return len(present)

    def rebuild(self, batches: Iterable[list[SceneRow]]) -> int:
        """Replace the whole index by one built from `batches`; the caller holds the writer lock.

        Built beside the old file and moved over it last, so a repair killed half-way leaves the old
        index in place (in PostgreSQL: emptied and refilled in one transaction, for the same reason).
        """
        if self.url:
            return self._rebuild_in_place(batches)
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
        with self._still.write():
            self._graph = CouplingGraph()
        return added

    def _rebuild_in_place(self, batches: Iterable[list[SceneRow]]) -> int:
        with self._lock, self._sql(), self._db:
            # The removal log is kept: other processes' graphs catch up with a rebuild as with any change.
            gone = [(sid,) for (sid,) in self._db.execute("SELECT id FROM scene").fetchall()]
            self._db.executemany("INSERT INTO removed (id) VALUES (?)", gone)
            # key_name stays: other processes' graphs map key ids they have read already.
            for table in ("scene_key", "scene", "moments", "removing"):
                self._db.execute(f"DELETE FROM {table}")
            added = sum(self.add(batch) for batch in batches)
        with self._still.write():
            self._graph = CouplingGraph()
        return added

    def _add_moments(self, vectors: np.ndarray, sign: float = 1.0) -> None:
        """Add (sign 1) or subtract (sign -1) vectors to the stored count, sum and sum of outer products."""
        dim = vectors.shape[1]
        count, total, outer = self._read_moments() or (0, np.zeros(dim), np.zeros((dim, dim)))
        total, outer = total + sign * vectors.sum(0), outer + sign * (vectors.T @ vectors)
        self._db.execute("INSERT INTO moments VALUES (1, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
                         'count = excluded.count, dim = excluded.dim, total = excluded.total, "outer" = excluded."outer"',
                         (count + int(sign) * len(vectors), vectors.shape[1], total.tobytes(), outer.tobytes()))

    def _read_moments(self) -> tuple[int, np.ndarray, np.ndarray] | None:
        """(count, sum of vectors, sum of outer products), or None before the first scene."""
        row = self._db.execute('SELECT count, dim, total, "outer" FROM moments WHERE id = 1').fetchone()
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

    def _has_removals(self) -> bool:
        """Whether the file has the removal tables (a schema-3 index opened read-only has not)."""
        if self.url:
            return True  # made on open
        return self._db.execute("SELECT 1 FROM sqlite_master WHERE name = 'removed'").fetchone() is not None

    @property
    def forgotten(self) -> set[str]:
        """Scenes the in-memory graph has seen removed (as of its last catch-up)."""
        return self._graph.gone

    def graph(self) -> CouplingGraph:
        """The in-memory coupling graph, caught up (unless this thread is inside `reading`, which holds it still).

        Read it inside `reading()` where other threads may catch it up meanwhile (services, the server).
        """
        if self._still.reading_here():
            return self._graph
        with self._still.write():
            return self._catch_up()

    @contextmanager
    def reading(self) -> Iterator[CouplingGraph]:
        """The caught-up graph, unchanged until the block ends: a catch-up from another thread waits for it."""
        self.graph()
        with self._still.read():
            yield self._graph

    def _catch_up(self) -> CouplingGraph:
        """The in-memory coupling graph, caught up with the scenes added and removed since the last call.

        Removals first, then additions, both read in one snapshot: a scene removed and added again
        since the last call ends up held once, with its current keys. The cost is the change's size.
        """
        with self._lock, self._sql():
            g = self._graph
            began = not self._db.in_transaction
            if began:
                # One snapshot: the removal log and the scene rows agree (PostgreSQL's default reads per statement).
                self._db.execute("BEGIN ISOLATION LEVEL REPEATABLE READ" if self.url else "BEGIN")
            try:
                if self._text_keys and not self.url:
                    self._text_keys = _keys_as_text(self._db)  # migrated since by a writer: ids from now on
                last = self._db.execute("SELECT COALESCE(MAX(n), 0) FROM scene").fetchone()[0]
                removals = self._has_removals()
                last_removed = (self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM removed").fetchone()[0]
                                if removals else 0)
                changed = False
                if last_removed > g.loaded_removed:
                    for (sid,) in self._db.execute("SELECT id FROM removed WHERE seq > ? ORDER BY seq",
                                                   (g.loaded_removed,)).fetchall():
                        g.remove(sid)
                    g.loaded_removed, changed = last_removed, True
                if last > g.loaded_n:
                    new = self._db.execute("SELECT n, id, title FROM scene WHERE n > ? ORDER BY n",
                                           (g.loaded_n,)).fetchall()
                    # A cold start reads all of memory: a block at a time, so only one block's rows live as Python
                    # objects at once (100k scenes read whole peaked 1 GB above the graph); the graph keeps each
                    # block as arrays and builds its base once, when it is next used.
                    if not self._text_keys:  # key names this graph has not seen (a cold load: all of them)
                        g.learn_keys(self._db.execute("SELECT id, name FROM key_name WHERE id > ? ORDER BY id",
                                                      (g.loaded_key,)).fetchall())
                    for block in range(0, len(new), LOAD_BLOCK):
                        rows = new[block : block + LOAD_BLOCK]
                        if self._text_keys:
                            g.add_block([(sid, title) for _, sid, title in rows], self._text_rows(rows))
                            continue
                        # Rows of the block's number range (numbers rise with `scene`'s, so a range scan of the
                        # primary key) as integers: no string per row.
                        found = self._db.execute("SELECT scene, key, tf FROM scene_key WHERE scene >= ? AND "
                                                 "scene <= ?", (rows[0][0], rows[-1][0])).fetchall()
                        flat = np.fromiter(chain.from_iterable(found), dtype=np.int64, count=3 * len(found))
                        del found
                        g.add_key_block(rows, flat[0::3], flat[1::3], flat[2::3])
                    g.loaded_n, changed = last, True
                if changed:
                    g.set_moments(*(self._read_moments() or (0, None, None)))
            finally:
                if began:
                    self._db.execute("COMMIT")
            return g.ready()

    def _text_rows(self, rows: list[tuple[int, str, str | None]]) -> list[tuple[str, str, int]]:
        """(scene id, key, count) of a schema-3/4 index read as it is, in key order (`CouplingGraph.add_key_block`)."""
        found: list[tuple[str, str, int]] = []
        ids = [sid for _, sid, _ in rows]
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            found.extend(self._db.execute("SELECT scene_id, key, tf FROM scene_key WHERE scene_id IN "
                                          f"({','.join('?' * len(chunk))}) ORDER BY scene_id, key", chunk))
        return found

    def close(self) -> None:
        self._db.close()


class CouplingGraph:
    """Scenes <-> entity nodes (IDF-weighted) + a BM25 term index, changed in time proportional to the change.

    The couplings are two sparse incidence matrices (scene x entity, scene x term with counts) kept as a
    compacted *base* plus a *tail* of rows changed since: `add` and `remove` touch only the scene's own
    keys (a removed base row is zeroed in place, its position reused by the next add), and the tail is
    merged into the base once it holds `compact_share` of the base's couplings (amortised O(1) per key).
    Nothing global is precomputed: IDF (which depends on the scene count) and the spreading weights
    are applied per query as vectors, so a change never rebuilds a matrix.
    """

    compact_min = 20_000  # tail couplings below which the tail is never merged
    compact_share = 0.25  # tail / base couplings above which it is

    def __init__(self) -> None:
        self.ids: list[str | None] = []  # by position; None where a removed scene's position is free
        self.position: dict[str, int] = {}
        self.titles: list[str | None] = []
        self.entity_id: dict[str, int] = {}
        self.entity_names: list[str] = []
        self.entity_df: list[int] = []
        self.term_id: dict[str, int] = {}
        self.term_df: list[int] = []
        self.title_index: dict[str, list[int]] = {}
        self.loaded_n = 0  # the index's last scene row this graph holds
        self.loaded_removed = 0  # the index's last removal this graph has applied
        self.loaded_key = 0  # the index's last key id this graph has learnt
        self._key_kind = np.zeros(0, dtype=np.int8)  # by key id: 0 entity, 1 term, -1 neither (or no such id)
        self._key_gid = np.zeros(0, dtype=np.int64)  # by key id: its entity or term id
        self.mean: np.ndarray | None = None
        self.second: np.ndarray | None = None
        self.count = 0  # scenes held (positions minus free ones)
        self.gone: set[str] = set()  # scenes removed (and not added again) while this graph lived
        self._free: list[int] = []
        self._lengths = np.zeros(0)  # BM25 length (sum of term counts) per position
        self._total_length = 0.0
        # rows changed since the base was built: position -> (entity ids, {term id: count}) in key order
        self._tail: dict[int, tuple[list[int], dict[int, int]]] = {}
        self._tail_nnz = 0
        self._tail_arrays: tuple[np.ndarray, ...] | None = None
        self._base_rows, self._base_nnz = 0, 0
        self._b = sp.csr_matrix((0, 0))  # scene x entity, 1.0 per coupling (a removed row holds zeros)
        self._b_cols = sp.csc_matrix((0, 0))
        self._t = sp.csr_matrix((0, 0), dtype=np.float32)  # scene x term counts
        self._t_cols = sp.csc_matrix((0, 0), dtype=np.float32)
        self._derived: dict[str, np.ndarray] | None = None  # per-entity weights, dropped on any change
        # rows appended by add_block and not yet in the base: (first position, entity counts per row, entity ids,
        # term counts per row, term ids, term counts); `ready` (or any other change) makes them one base
        self._pending: list[tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []

    @property
    def n(self) -> int:
        """Scenes held: the statistic (IDF, uniform activation) every score is scaled by."""
        return self.count

    @property
    def size(self) -> int:
        """Positions (free ones included): the length of every per-scene score array."""
        return len(self.ids)

    # --- changes ---------------------------------------------------------------------------
    def learn_keys(self, names: Sequence[tuple[int, str]]) -> None:
        """Key ids of the index (id, name), ascending and above `loaded_key`: each id's kind and entity or term id.

        Names join the graph with no holders (as a removed scene's keys stay), so scene rows map to the graph
        with one array lookup per block.
        """
        if not names:
            return
        top = names[-1][0]
        if top >= len(self._key_kind):
            grow = max(top + 1, 2 * len(self._key_kind)) - len(self._key_kind)
            self._key_kind = np.concatenate([self._key_kind, np.full(grow, -1, dtype=np.int8)])
            self._key_gid = np.concatenate([self._key_gid, np.zeros(grow, dtype=np.int64)])
        kinds, gids = zip(*map(self._resolve, [name for _, name in names]))
        at = np.fromiter((n for n, _ in names), dtype=np.int64, count=len(names))
        self._key_kind[at] = np.asarray(kinds, dtype=np.int8)
        self._key_gid[at] = np.asarray(gids, dtype=np.int64)
        self.loaded_key = top

    def add_key_block(self, scenes: Sequence[tuple[int, str, str | None]], scene: np.ndarray, key: np.ndarray,
                      tf: np.ndarray) -> None:
        """Add many scenes from the index's integer rows: `scenes` (number, id, title) in number order, and per
        row its scene number, key id (learnt by `learn_keys`) and count.

        Each scene's entities keep the order of their key text, as when the index held the text form and
        was read `ORDER BY scene_id, key`: bridge probes break ties by it, so every process (on SQLite or
        PostgreSQL, loaded cold or caught up) plans the same probes.
        """
        if not scenes:
            return
        numbers = np.fromiter((n for n, _, _ in scenes), dtype=np.int64, count=len(scenes))
        local = np.searchsorted(numbers, scene)
        held = (local < len(numbers)) & (numbers[np.minimum(local, len(numbers) - 1)] == scene)
        local, key, tf = local[held], key[held], tf[held]
        kind, gid = self._key_kind[key], self._key_gid[key]
        entity = kind == 0
        distinct, inverse = np.unique(gid[entity], return_inverse=True)
        names = [self.entity_names[e] for e in distinct.tolist()]
        by_name = np.empty(len(names), dtype=np.int64)
        by_name[sorted(range(len(names)), key=names.__getitem__)] = np.arange(len(names))
        rank = len(names) + gid  # terms after entities ("e:" < "t:"); their order within a scene is unseen
        rank[entity] = by_name[inverse.reshape(-1)]
        order = np.lexsort((rank, local))
        self._add_rows([(sid, title) for _, sid, title in scenes], local[order], kind[order], gid[order],
                       tf[order].astype(np.float64))

    def add_block(self, scenes: Sequence[tuple[str, str | None]], rows: Sequence[tuple[str, str, int]]) -> None:
        """Add many scenes at once: `scenes` (id, title) in position order, `rows` their (id, key, count), each
        scene's keys in the order given (the text form of a schema-3/4 index read as it is)."""
        if not scenes:
            return
        local = {sid: n for n, (sid, _) in enumerate(scenes)}
        if len(local) != len(scenes):
            raise ValueError("add_block: a scene id appears twice in one block")
        row_keys = [r[1] for r in rows]
        distinct = dict.fromkeys(row_keys)  # each key once, in first-seen order
        slot = dict(zip(distinct, range(len(distinct))))
        kinds, gids = zip(*map(self._resolve, distinct)) if distinct else ((), ())
        row_key = np.fromiter(map(slot.__getitem__, row_keys), dtype=np.int64, count=len(row_keys))
        self._add_rows(scenes, np.fromiter(map(local.__getitem__, [r[0] for r in rows]), dtype=np.int64,
                                           count=len(rows)),
                       np.asarray(kinds, dtype=np.int8)[row_key], np.asarray(gids, dtype=np.int64)[row_key],
                       np.fromiter([r[2] for r in rows], dtype=np.float64, count=len(rows)))

    def _add_rows(self, scenes: Sequence[tuple[str, str | None]], row_scene: np.ndarray, row_kind: np.ndarray,
                  row_gid: np.ndarray, counts: np.ndarray) -> None:
        """The same graph as `add` per scene, built with array operations: per coupling only C-level passes,
        Python code once per distinct key and scene, and the rows join the base in one build at `ready` (a
        cold load is one pass, not a dict per scene and a merge of the tail every block). When a scene is
        already held, a free position waits to be reused or a tail is pending, it falls back to `add` per
        scene. Rows: block-local scene, kind (0 entity, 1 term, -1 neither, ignored as `add` does), entity or
        term id, count; a scene's keys keep the order given."""
        if not scenes:
            return
        keep = row_kind >= 0
        order = np.argsort(row_scene[keep], kind="stable")  # by scene, each scene's keys in row order
        row_scene, row_kind, row_gid, counts = (a[keep][order] for a in (row_scene, row_kind, row_gid, counts))
        first, count = len(self.ids), len(scenes)
        if self._free or self._tail or any(sid in self.position for sid, _ in scenes):
            bounds = np.searchsorted(row_scene, np.arange(count + 1)).tolist()
            for n, (sid, title) in enumerate(scenes):
                kind, gid, tf = (a[bounds[n] : bounds[n + 1]] for a in (row_kind, row_gid, counts))
                self._add_resolved(sid, title, gid[kind == 0].tolist(),
                                   dict(zip(gid[kind == 1].tolist(), tf[kind == 1].astype(np.int64).tolist())))
            self.ready()
            return
        for k, df in ((0, self.entity_df), (1, self.term_df)):
            ids, holders = np.unique(row_gid[row_kind == k], return_counts=True)
            for i, h in zip(ids.tolist(), holders.tolist()):
                df[i] += h
        parts = []
        for k in (0, 1):
            pick = np.flatnonzero(row_kind == k)
            parts.append((np.bincount(row_scene[pick], minlength=count), row_gid[pick].astype(np.int32),
                          counts[pick].astype(np.float32)))
        (b_counts, b_ids, _), (t_counts, t_ids, t_values) = parts
        self._pending.append((first, b_counts, b_ids, t_counts, t_ids, t_values))
        lengths = np.bincount(row_scene[row_kind == 1], weights=counts[row_kind == 1], minlength=count)
        size = first + count
        if size > len(self._lengths):
            self._lengths = np.concatenate([self._lengths, np.zeros(max(64, size - len(self._lengths),
                                                                        len(self._lengths)))])
        self._lengths[first:size] = lengths
        self._total_length += float(lengths.sum())
        aliases: dict[str, list[str]] = {}  # many scenes share a title (a document's passages)
        for n, (sid, title) in enumerate(scenes):
            self.ids.append(sid)
            self.titles.append(title)
            self.position[sid] = first + n
            self.gone.discard(sid)
            if title:
                if title not in aliases:
                    aliases[title] = title_aliases(title)
                for alias in aliases[title]:
                    self.title_index.setdefault(alias, []).append(first + n)
        self.count += count
        self._changed()

    def _merge_pending(self) -> None:
        """The base and the blocks added since, as one base (O(couplings), array operations only)."""
        if not self._pending:
            return
        size, m, v = self.size, len(self.entity_names), len(self.term_df)
        base = self._base_rows
        b_rows, t_rows = [np.diff(self._b.indptr)] if base else [], [np.diff(self._t.indptr)] if base else []
        b_idx, t_idx, t_val = ([self._b.indices], [self._t.indices], [self._t.data]) if base else ([], [], [])
        b_keep = [self._b.data] if base else []
        for first, b_counts, b_ids, t_counts, t_ids, t_values in self._pending:
            b_rows.append(b_counts)
            t_rows.append(t_counts)
            b_idx.append(b_ids)
            t_idx.append(t_ids)
            t_val.append(t_values)
            b_keep.append(np.ones(len(b_ids)))
        self._pending = []
        b_ptr = np.concatenate([[0], np.cumsum(np.concatenate(b_rows))]).astype(np.int64)
        t_ptr = np.concatenate([[0], np.cumsum(np.concatenate(t_rows))]).astype(np.int64)
        b = sp.csr_matrix((np.concatenate(b_keep), np.concatenate(b_idx).astype(np.int32, copy=False), b_ptr),
                          shape=(size, m))
        t = sp.csr_matrix((np.concatenate(t_val).astype(np.float32, copy=False),
                           np.concatenate(t_idx).astype(np.int32, copy=False), t_ptr), shape=(size, v))
        # The blocks and the old base go before the column copies are made: at a million scenes each copy
        # of the couplings is ~0.5 GB, and holding blocks, rows and columns at once was the load's peak.
        del b_rows, t_rows, b_idx, t_idx, t_val, b_keep
        self._b, self._t, self._b_cols, self._t_cols = b, t, None, None
        self._b_cols, self._t_cols = b.tocsc(), t.tocsc()
        for cols in (self._b_cols, self._t_cols):
            cols.sort_indices()
        self._base_rows, self._base_nnz = size, self._b.nnz + self._t.nnz
        self._changed()
        if self._base_nnz > 1_000_000:
            _return_freed_memory()

    def _resolve(self, key: str) -> tuple[int, int]:
        """A key's kind (0 entity "e:", 1 term "t:", -1 neither) and its entity or term id (new ones join, unheld)."""
        if key.startswith("e:"):
            eid = self.entity_id.setdefault(key[2:], len(self.entity_names))
            if eid == len(self.entity_names):
                self.entity_names.append(key[2:])
                self.entity_df.append(0)
            return 0, eid
        if key.startswith("t:"):
            tid = self.term_id.setdefault(key[2:], len(self.term_df))
            if tid == len(self.term_df):
                self.term_df.append(0)
            return 1, tid
        return -1, 0

    def add(self, scene_id: str, title: str | None, keys: dict[str, int]) -> None:
        entities: list[int] = []
        terms: dict[int, int] = {}
        for key, tf in keys.items():
            kind, gid = self._resolve(key)
            if kind == 0:
                entities.append(gid)
            elif kind == 1:
                terms[gid] = tf
        self._add_resolved(scene_id, title, entities, terms)

    def _add_resolved(self, scene_id: str, title: str | None, entities: list[int], terms: dict[int, int]) -> None:
        """Add one scene given its entity ids (in key order) and term ids with counts."""
        self._merge_pending()
        if scene_id in self.position:
            self.remove(scene_id)
        self.gone.discard(scene_id)
        pos = self._free.pop() if self._free else len(self.ids)
        if pos == len(self.ids):
            self.ids.append(scene_id)
            self.titles.append(title)
            if pos >= len(self._lengths):
                self._lengths = np.concatenate([self._lengths, np.zeros(max(64, len(self._lengths)))])
        else:
            self.ids[pos], self.titles[pos] = scene_id, title
        self.position[scene_id] = pos
        for eid in entities:
            self.entity_df[eid] += 1
        for tid in terms:
            self.term_df[tid] += 1
        length = float(sum(terms.values()))
        self._lengths[pos] = length
        self._total_length += length
        self._tail[pos] = (entities, terms)
        self._tail_nnz += len(entities) + len(terms)
        for alias in title_aliases(title) if title else []:
            self.title_index.setdefault(alias, []).append(pos)
        self.count += 1
        self._changed()

    def remove(self, scene_id: str) -> bool:
        """Take a scene out (its keys' counts, its length, its title); False when the graph does not hold it."""
        self._merge_pending()
        pos = self.position.pop(scene_id, None)
        if pos is None:
            return False
        entities, terms = self._row(pos)
        for eid in entities:
            self.entity_df[eid] -= 1
        for tid in terms:
            self.term_df[tid] -= 1
        if pos in self._tail:
            del self._tail[pos]
            self._tail_nnz -= len(entities) + len(terms)
        else:
            self._zero_base_row(pos, entities, list(terms))
        self._total_length -= self._lengths[pos]
        self._lengths[pos] = 0.0
        title = self.titles[pos]
        for alias in title_aliases(title) if title else []:
            holders = self.title_index.get(alias, [])
            if pos in holders:
                holders.remove(pos)
            if not holders:
                self.title_index.pop(alias, None)
        self.ids[pos], self.titles[pos] = None, None
        self.gone.add(scene_id)
        self._free.append(pos)
        self.count -= 1
        self._changed()
        return True

    def set_moments(self, count: int, total: np.ndarray, outer: np.ndarray) -> None:
        if count:
            self.mean, self.second = total / count, outer / count
        else:
            self.mean = self.second = None

    def ready(self) -> CouplingGraph:
        """Merge the tail into the base when it has grown past its share (amortised; never on every change)."""
        self._merge_pending()
        if self._tail_nnz > max(self.compact_min, self.compact_share * self._base_nnz):
            self._compact()
        return self

    def _changed(self) -> None:
        self._tail_arrays = None
        self._derived = None

    def _row(self, pos: int) -> tuple[list[int], dict[int, int]]:
        if pos in self._tail:
            return self._tail[pos]
        if pos >= self._base_rows:
            return [], {}
        b0, b1 = self._b.indptr[pos], self._b.indptr[pos + 1]
        t0, t1 = self._t.indptr[pos], self._t.indptr[pos + 1]
        entities = [int(e) for e, v in zip(self._b.indices[b0:b1], self._b.data[b0:b1]) if v]
        terms = {int(t): int(v) for t, v in zip(self._t.indices[t0:t1], self._t.data[t0:t1]) if v}
        return entities, terms

    def _zero_base_row(self, pos: int, entities: list[int], terms: list[int]) -> None:
        """A removed base scene's couplings become explicit zeros (row and columns), until the next merge."""
        if pos >= self._base_rows:
            return
        self._b.data[self._b.indptr[pos] : self._b.indptr[pos + 1]] = 0.0
        self._t.data[self._t.indptr[pos] : self._t.indptr[pos + 1]] = 0.0
        for cols, ids in ((self._b_cols, entities), (self._t_cols, terms)):
            for col in ids:
                if col >= cols.shape[1]:
                    continue
                start, end = cols.indptr[col], cols.indptr[col + 1]
                at = start + int(np.searchsorted(cols.indices[start:end], pos))
                if at < end and cols.indices[at] == pos:
                    cols.data[at] = 0.0

    def _compact(self) -> None:
        """One base from every held row (O(couplings)); positions stay as they are."""
        size, m, v = self.size, len(self.entity_names), len(self.term_df)
        b_ptr, t_ptr = np.zeros(size + 1, dtype=np.int64), np.zeros(size + 1, dtype=np.int64)
        b_idx: list[np.ndarray] = []
        t_idx: list[np.ndarray] = []
        t_val: list[np.ndarray] = []
        for pos in range(size):
            if self.ids[pos] is None:
                entities, terms = [], {}
            elif pos in self._tail:
                entities, terms = self._tail[pos]
            else:
                b0, b1 = self._b.indptr[pos], self._b.indptr[pos + 1]
                t0, t1 = self._t.indptr[pos], self._t.indptr[pos + 1]
                b_idx.append(self._b.indices[b0:b1])
                t_idx.append(self._t.indices[t0:t1])
                t_val.append(self._t.data[t0:t1])
                b_ptr[pos + 1], t_ptr[pos + 1] = b1 - b0, t1 - t0
                continue
            b_idx.append(np.asarray(entities, dtype=np.int32))
            t_idx.append(np.fromiter(terms.keys(), dtype=np.int32, count=len(terms)))
            t_val.append(np.fromiter(terms.values(), dtype=np.float32, count=len(terms)))
            b_ptr[pos + 1], t_ptr[pos + 1] = len(entities), len(terms)
        b_indices = np.concatenate(b_idx).astype(np.int32) if b_idx else np.zeros(0, dtype=np.int32)
        t_indices = np.concatenate(t_idx).astype(np.int32) if t_idx else np.zeros(0, dtype=np.int32)
        t_data = np.concatenate(t_val).astype(np.float32) if t_val else np.zeros(0, dtype=np.float32)
        self._b = sp.csr_matrix((np.ones(len(b_indices)), b_indices, np.cumsum(b_ptr)), shape=(size, m))
        self._t = sp.csr_matrix((t_data, t_indices, np.cumsum(t_ptr)), shape=(size, v))
        self._b_cols, self._t_cols = self._b.tocsc(), self._t.tocsc()
        for cols in (self._b_cols, self._t_cols):
            cols.sort_indices()
        self._base_rows, self._base_nnz = size, len(b_indices) + len(t_indices)
        self._tail, self._tail_nnz = {}, 0
        self._changed()

    # --- per-query views -----------------------------------------------------------------
    def _tail_coo(self) -> tuple[np.ndarray, ...]:
        """The tail as coordinate arrays: entity rows/cols, term rows/cols/counts (rebuilt after a change, O(tail))."""
        if self._tail_arrays is None:
            er, ec, tr, tc, tv = [], [], [], [], []
            for pos, (entities, terms) in self._tail.items():
                er.extend([pos] * len(entities))
                ec.extend(entities)
                tr.extend([pos] * len(terms))
                tc.extend(terms.keys())
                tv.extend(terms.values())
            self._tail_arrays = (np.asarray(er, dtype=np.int64), np.asarray(ec, dtype=np.int64),
                                 np.asarray(tr, dtype=np.int64), np.asarray(tc, dtype=np.int64),
                                 np.asarray(tv, dtype=np.float64))
        return self._tail_arrays

    def _weights(self) -> dict[str, np.ndarray]:
        """Per-entity IDF and spreading weights, and per-scene IDF mass: O(entities + couplings), once per change."""
        if self._derived is None:
            df = np.asarray(self.entity_df, dtype=float)
            idf = np.where(df > 0, np.log(max(self.n, 1) / np.maximum(df, 1.0)), 0.0)
            # entity -> scene spreads uniformly over its holders; an entity every scene holds conducts nothing
            inv_df = np.where(idf > 0, 1.0 / np.maximum(df, 1.0), 0.0)
            self._derived = {"idf": idf, "inv_df": inv_df}
            self._derived["mass"] = self._scene_dot(idf)  # scene -> entity in proportion to rarity
        return self._derived

    def _scene_dot(self, x: np.ndarray) -> np.ndarray:
        """B @ x: per scene, the sum of x over its entities."""
        out = np.zeros(self.size)
        if self._base_rows:
            out[: self._base_rows] = self._b @ x[: self._b.shape[1]]
        er, ec, *_ = self._tail_coo()
        if len(er):
            out += np.bincount(er, weights=x[ec], minlength=self.size)
        return out

    def _entity_dot(self, y: np.ndarray) -> np.ndarray:
        """B.T @ y: per entity, the sum of y over its holders."""
        m = len(self.entity_names)
        out = np.zeros(m)
        if self._base_rows:
            out[: self._b.shape[1]] = self._b.T @ y[: self._base_rows]
        er, ec, *_ = self._tail_coo()
        if len(er):
            out += np.bincount(ec, weights=y[er], minlength=m)
        return out

    def holders_of(self, entity: str) -> np.ndarray:
        """Positions of the scenes that mention an entity."""
        eid = self.entity_id.get(entity)
        if eid is None or not self.entity_df[eid]:
            return np.zeros(0, dtype=np.int64)
        parts = []
        if eid < self._b_cols.shape[1]:
            start, end = self._b_cols.indptr[eid], self._b_cols.indptr[eid + 1]
            parts.append(self._b_cols.indices[start:end][self._b_cols.data[start:end] != 0])
        er, ec, *_ = self._tail_coo()
        parts.append(er[ec == eid])
        return np.concatenate(parts).astype(np.int64)

    @property
    def term_idf(self) -> _TermIdf:
        return _TermIdf(self)

    # --- query-time primitives -----------------------------------------------------------
    def idf(self, entity: str) -> float:
        df = self.df(entity)
        return math.log(max(self.n, 1)) if not df else math.log(max(self.n, 1) / df)

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
        """BM25 of every position (0 where no term is held): `bm25_at` spread out."""
        return _dense(self.size, *self.bm25_at(terms))

    def bm25_at(self, terms: Iterable[str]) -> tuple[np.ndarray, np.ndarray]:
        """BM25 of the scenes holding any of the terms, as (positions ascending, scores > 0); every other scene
        scores 0. Only the terms' posting lists are read: no array of memory's size unless they cover much of it."""
        ids = [self.term_id[t] for t in set(terms) if t in self.term_id and self.term_df[self.term_id[t]]]
        if not ids or self.n == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        avg = max(self._total_length / self.n, 1e-9)
        rows, counts, idfs = [], [], []
        for tid in ids:
            idf = self.term_idf[tid]
            if tid < self._t_cols.shape[1]:
                start, end = self._t_cols.indptr[tid], self._t_cols.indptr[tid + 1]
                rows.append(self._t_cols.indices[start:end])
                counts.append(self._t_cols.data[start:end])
                idfs.append(np.full(end - start, idf))
        _, _, tr, tc, tv = self._tail_coo()
        if len(tr):
            hit = np.isin(tc, ids)
            rows.append(tr[hit])
            counts.append(tv[hit])
            idfs.append(np.array([self.term_idf[int(t)] for t in tc[hit]]))
        r = np.concatenate(rows).astype(np.int64)
        f = np.concatenate(counts).astype(float)
        den = BM25_K1 * (1 - BM25_B + BM25_B * self._lengths[r] / avg)
        scores = np.concatenate(idfs) * f * (BM25_K1 + 1) / (f + den)
        return _sum_by_position(r, scores, self.size)  # a removed scene's zeroed base row sums to 0: left out

    def entity_bonus(self, entities: dict[str, float], title_weight: float, mention_weight: float) -> np.ndarray:
        """`entity_bonus_at` spread out over every position."""
        return _dense(self.size, *self.entity_bonus_at(entities, title_weight, mention_weight))

    def entity_bonus_at(self, entities: dict[str, float], title_weight: float,
                        mention_weight: float) -> tuple[np.ndarray, np.ndarray]:
        """A scene titled by a query entity gets title_weight; each mention adds its scaled rarity. As
        (positions ascending, bonus) over the scenes titled by or mentioning a query entity."""
        log_n = math.log(max(self.n, 2))
        titled = {e: np.asarray(self.title_index.get(e, []), dtype=np.int64) for e in entities}
        held = {e: self.holders_of(e) if mention_weight and self.df(e) else np.zeros(0, dtype=np.int64)
                for e in entities}
        where = np.unique(np.concatenate([np.zeros(0, dtype=np.int64), *titled.values(), *held.values()]))
        bonus = np.zeros(len(where))
        for entity, weight in entities.items():  # in order: a title raises to title_weight what mentions gave
            at = np.searchsorted(where, titled[entity])
            bonus[at] = np.maximum(bonus[at], title_weight)
            bonus[np.searchsorted(where, held[entity])] += mention_weight * weight / log_n
        return where, bonus

    def spread(self, seed_scenes: dict[int, float], seed_entities: dict[str, float],
               restart: float, iterations: int) -> np.ndarray:
        """Personalised PageRank over scene <-> entity couplings; activation per scene (uniform = 1/n).

        Edges weigh an entity's IDF: scene -> entity in proportion to rarity, entity -> scene uniformly.
        """
        w = self._weights()
        ps, pe = np.zeros(self.size), np.zeros(len(self.entity_names))
        for pos, weight in seed_scenes.items():
            ps[pos] += weight
        for entity, weight in seed_entities.items():
            eid = self.entity_id.get(entity)
            if eid is not None and self.entity_df[eid]:
                pe[eid] += weight
        total = ps.sum() + pe.sum()
        if total <= 0:
            return np.zeros(self.size)
        ps, pe = ps / total, pe / total
        out_scale = 1.0 / np.maximum(w["mass"], 1e-12)
        xs, xe = ps.copy(), pe.copy()
        for _ in range(iterations):
            xs, xe = ((1 - restart) * self._scene_dot(xe * w["inv_df"]) + restart * ps,
                      (1 - restart) * w["idf"] * self._entity_dot(xs * out_scale) + restart * pe)
        return xs

    def spread_near(self, seed_scenes: dict[int, float], seed_entities: dict[str, float], restart: float,
                    iterations: int, floor: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        """`spread` on sparse vectors, as (positions, activation): only the couplings of scenes and entities that
        hold activation are read, and activation under `floor` is dropped after each step (0: `spread` exactly).
        Its cost follows the seeds' neighbourhood, not the memory's size."""
        w = self._weights()
        if "out_scale" not in w:
            w["out_scale"] = 1.0 / np.maximum(w["mass"], 1e-12)
        er, ec, *_ = self._tail_coo()
        couplings = Couplings(rows=(self._b.indptr, self._b.indices, self._b.data),
                              cols=(self._b_cols.indptr, self._b_cols.indices, self._b_cols.data),
                              scene_out=w["out_scale"], entity_in=w["idf"], entity_out=w["inv_df"],
                              scenes=self.size, entities=len(self.entity_names), tail=(er, ec))
        eids = {self.entity_id[e]: x for e, x in seed_entities.items()
                if e in self.entity_id and self.entity_df[self.entity_id[e]]}
        return local_spread(couplings, (np.fromiter(seed_scenes, dtype=np.int64, count=len(seed_scenes)),
                                        np.fromiter(seed_scenes.values(), dtype=float, count=len(seed_scenes))),
                            (np.fromiter(eids, dtype=np.int64, count=len(eids)),
                             np.fromiter(eids.values(), dtype=float, count=len(eids))), restart, iterations, floor)

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
            if len(key.split()) == 1 and question.lstrip().startswith(span) and not self.df(key):
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
                if is_stop(gram) or not self.df(gram):
                    continue
                if any(re.search(r"\b" + re.escape(gram) + r"\b", f) for f in found):
                    continue  # inside a longer match
                found[gram] = self.idf(gram)
        return found

    def entities_of(self, pos: int) -> list[str]:
        return [self.entity_names[e] for e in self._row(pos)[0]]


def _sum_by_position(positions: np.ndarray, values: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Values summed per position, as (positions ascending, sums), leaving out positions whose sum is 0: by
    sorting when they are few against memory's size, by counting into an array of that size when they are many
    (each sums in input order, so both give the same sums)."""
    if len(positions) * 16 < size:
        where, inverse = np.unique(positions, return_inverse=True)
        total = np.bincount(inverse, weights=values, minlength=len(where))
        kept = np.flatnonzero(total)
        return where[kept], total[kept]
    total = np.bincount(positions, weights=values, minlength=size)
    where = np.flatnonzero(total != 0)  # through a bool array: 4x faster than flatnonzero on the floats at 1M
    return where, total[where]


def _dense(size: int, where: np.ndarray, values: np.ndarray) -> np.ndarray:
    out = np.zeros(size)
    out[where] = values
    return out


def _keys_as_text(db: sqlite3.Connection, postgres: bool = False) -> bool:
    """Whether scene_key holds the text form of schema 3/4: (scene id, key text, count)."""
    if postgres:
        return db.execute("SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema() "
                          "AND table_name = 'scene_key' AND column_name = 'scene_id'").fetchone() is not None
    return any(col[1] == "scene_id" for col in db.execute("PRAGMA table_info(scene_key)"))


def _return_freed_memory() -> None:
    """Hand the C heap's free pages back to the OS (glibc; elsewhere nothing): a cold load's row tuples and
    block arrays leave the heap fragmented, 66 MB of a 100k memory's 354 MB resident after the load."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class _TermIdf:
    """BM25 IDF of a term id, computed when asked (it depends on the scene count, which every change moves)."""

    def __init__(self, graph: CouplingGraph):
        self.graph = graph

    def __getitem__(self, tid: int) -> float:
        n, df = self.graph.n, self.graph.term_df[tid]
        return math.log(1 + (n - df + 0.5) / (df + 0.5))
