"""PostgreSQL: where processes on several machines share a memory's couplings, writer lock and threads.

With a Chroma server (`--store-url`) the scenes are shared, but the couplings index
(a SQLite file) and the writer lock (an flock) live in the data dir, which pins every
process to one folder on one machine. `--state-url postgresql://...` moves both here:
the index keeps its tables and SQL (this module gives psycopg the slice of sqlite3's
connection API the index uses), and the writer lock becomes a session advisory lock,
which the server drops when its holder dies, as the kernel drops an flock. One memory
per database, as one memory per Chroma server.
"""

from __future__ import annotations

import os
import re
import socket
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from adapters.store_lock import WriterLock
from state.errors import SceneMindError, StoreBusy, StoreDamaged, StoreUnavailable

# Advisory keys, (class, object) as pg_locks shows them; any fixed pairs work, since a database holds one memory.
LOCK_KEY = (0x5CE0E, 1)  # the writer lock
SETUP_LOCK = (0x5CE0E, 2)  # around making tables: two processes opening a fresh database at once
CONNECT_TIMEOUT_S = 5


def is_postgres_url(url: str) -> bool:
    return url.startswith(("postgresql://", "postgres://"))


def redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{parts.netloc.rpartition('@')[2]}"))
    except ValueError:  # not even a URL: say nothing that could hold a password
        return f"{url.split('://', 1)[0]}://..." if "://" in url else "(not a URL)"


def server_options(store_url: str = "", state_url: str = "") -> str:
    """The global options naming a memory's servers, for the commands error messages suggest: the PostgreSQL
    URL without its password (the user adds it, or sets SCENEMIND_STATE_URL), never the secret itself."""
    return (f" --store-url {store_url}" if store_url else "") + (f" --state-url {redact(state_url)}" if state_url else "")


def connect(url: str) -> Any:
    """An autocommit psycopg connection (transactions are begun explicitly), or one clear StoreUnavailable."""
    if not is_postgres_url(url):
        raise StoreUnavailable(f"--state-url must be a PostgreSQL URL (postgresql://user@host:port/database), "
                               f"got {redact(url)!r}")
    import psycopg

    try:
        return psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S,
                               application_name="scenemind")
    except psycopg.Error as exc:
        reason = " ".join(str(exc).split())[:300]
        raise StoreUnavailable(f"PostgreSQL at {redact(url)} cannot be reached ({reason}): start it, or fix "
                               "--state-url / SCENEMIND_STATE_URL") from None


def translate(exc: Exception, url: str, repair: str) -> SceneMindError:
    """psycopg's errors as the domain's: a server gone is unavailable, anything else names the repair."""
    import psycopg

    text = " ".join(str(exc).split())[:300]
    if isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError)):
        return StoreUnavailable(f"PostgreSQL at {redact(url)} stopped answering ({text}): nothing is half-written "
                                "(the server rolls back a change it did not commit); start it, or mend the "
                                "network, and rerun")
    if isinstance(exc, psycopg.errors.InsufficientPrivilege):
        return StoreUnavailable(f"PostgreSQL at {redact(url)} refuses this user ({text}): an ingest or a repair "
                                "must create and write the couplings tables")
    return StoreDamaged(f"the couplings index in PostgreSQL at {redact(url)} is damaged ({text}): run {repair} "
                        "(it rebuilds the index from the scene store)")


def _marks(sql: str) -> str:
    # The index writes sqlite3's `?` parameters; none of its SQL has a literal `?` or `%`.
    return sql.replace("?", "%s")


class SqlConnection:
    """The part of sqlite3.Connection the couplings index uses, over one psycopg connection.

    `with conn:` is one transaction (committed, or rolled back on an error), as in sqlite3;
    `execute("BEGIN ...")` / `execute("COMMIT")` work too (the graph's snapshot reads).
    A connection the server dropped (a restart, a failover, an idle timeout) is opened again for the
    next statement that does not belong to a transaction in flight: a long-lived service recovers by
    itself, while a change the drop cut short still fails (and was rolled back by the server).
    """

    def __init__(self, url: str):
        self.url = url
        self._conn = connect(url)
        self._depth = 0

    @property
    def in_transaction(self) -> bool:
        from psycopg.pq import TransactionStatus

        return not self._conn.broken and self._conn.info.transaction_status != TransactionStatus.IDLE

    def _run(self, call: Any) -> Any:
        import psycopg

        if self._conn.broken and not self._depth:
            self._reopen()
        idle = not self.in_transaction and not self._depth
        try:
            return call(self._conn)
        except psycopg.OperationalError:
            if not (idle and self._conn.broken):
                raise
            self._reopen()  # dropped between statements: nothing was lost, say it once more
            return call(self._conn)

    def _reopen(self) -> None:
        try:
            self._conn.close()
        finally:
            self._conn = connect(self.url)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self._run(lambda conn: conn.execute(_marks(sql), params or None))

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        rows = list(rows)
        if rows:
            def many(conn: Any) -> None:
                with conn.cursor() as cur:
                    cur.executemany(_marks(sql), rows)

            self._run(many)

    def executescript(self, script: str) -> None:
        self._run(lambda conn: conn.execute(script))  # no parameters: one multi-statement query

    def __enter__(self) -> SqlConnection:
        if self._depth == 0 and not self.in_transaction:
            self.execute("BEGIN")
        self._depth += 1
        return self

    def __exit__(self, kind: type | None, *_: Any) -> None:
        self._depth -= 1
        if self._depth == 0 and self.in_transaction:
            self._conn.execute("ROLLBACK" if kind else "COMMIT")

    def close(self) -> None:
        self._conn.close()


class AdvisoryLock(WriterLock):
    """The writer lock of a memory whose state is in PostgreSQL: one writer among every process, on any machine.

    A session advisory lock on a connection of its own, held while writing; the server lets go when
    the holder's connection ends (a killed writer leaves no stale lock). Who holds it is written
    beside it (pid, host, what), for the message the next writer gets.
    """

    def __init__(self, url: str):
        super().__init__(os.devnull)  # no file: the base class keeps only its per-thread re-entrance
        self.url = url
        self._conn: Any = None

    def _acquire(self, what: str, wait_s: float) -> None:
        import time

        conn = connect(self.url)
        try:
            deadline = time.monotonic() + max(wait_s, 0.5)
            while not conn.execute("SELECT pg_try_advisory_lock(%s, %s)", LOCK_KEY).fetchone()[0]:
                if time.monotonic() >= deadline:
                    conn.close()
                    raise StoreBusy(self._busy_message(what))
                time.sleep(0.05)
            conn.execute("CREATE TABLE IF NOT EXISTS writer (id INTEGER PRIMARY KEY CHECK (id = 1), holder TEXT)")
            conn.execute("INSERT INTO writer VALUES (1, %s) ON CONFLICT (id) DO UPDATE SET holder = excluded.holder",
                         (f"pid {os.getpid()} {what} on {socket.gethostname()}",))
        except StoreBusy:
            raise
        except Exception as exc:
            conn.close()
            raise translate(exc, self.url, "`scenemind repair`") from None
        self._conn = conn

    def _release(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()  # ending the session releases the lock
            finally:
                self._conn = None

    def held_elsewhere(self) -> bool:
        if self._depth:
            return False
        try:
            with self._probe() as conn:
                row = conn.execute("SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND classid = %s AND "
                                   "objid = %s AND granted AND pid <> pg_backend_pid()", LOCK_KEY).fetchone()
        except SceneMindError:
            return False
        return row is not None

    def holder(self) -> str:
        try:
            with self._probe() as conn:
                row = conn.execute("SELECT holder FROM writer WHERE id = 1").fetchone()
        except Exception:
            return ""
        return (row[0] or "")[:200] if row else ""

    @contextmanager
    def _probe(self) -> Iterator[Any]:
        conn = connect(self.url)
        try:
            yield conn
        finally:
            conn.close()

    def _busy_message(self, what: str) -> str:
        holder = self.holder() or "another process"
        match = re.match(r"pid (\d+) (.*) on (\S+)$", holder)
        if match:
            holder = f"{match.group(2) or 'a writer'} (pid {match.group(1)} on {match.group(3)})"
        return (f"another {holder} is writing to the memory at {redact(self.url)}, so this {what} cannot start: "
                "wait for it to finish, then rerun (ids are stable: nothing is doubled)")


_locks: dict[str, AdvisoryLock] = {}
_locks_guard = threading.Lock()


def advisory_lock(url: str) -> AdvisoryLock:
    """The process-wide writer lock of the memory in this database."""
    with _locks_guard:
        if url not in _locks:
            _locks[url] = AdvisoryLock(url)
        return _locks[url]
