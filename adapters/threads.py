"""Where chat threads keep their checkpoints: a SQLite file in the data dir, or PostgreSQL at `state_url`.

With a Chroma server (`--store-url`) and `--state-url`, a thread begun by a process on one
machine is continued by a process on another: LangGraph's PostgresSaver holds every
checkpoint in the shared database. Either saver carries scenemind's state types (see
`graph.builder.registered`).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from state.errors import StoreUnavailable

CONNECT_TIMEOUT_S = 5
# Session advisory lock (class, object) around the saver's migrations: two processes opening a fresh
# database at once would otherwise both create its tables and one would fail.
SETUP_LOCK = (0x5CE0E, 2)


def open_checkpointer(sqlite_path: Path, state_url: str = "") -> Any:
    """PostgresSaver (tables set up) when state_url is given, else a SqliteSaver on sqlite_path."""
    from graph.builder import registered

    if state_url:
        return registered(_postgres_saver(state_url))
    from langgraph.checkpoint.sqlite import SqliteSaver

    sqlite_path.parent.mkdir(parents=True, exist_ok=True)
    return registered(SqliteSaver(sqlite3.connect(str(sqlite_path), check_same_thread=False, timeout=30)))


def _redacted(url: str) -> str:
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        netloc = f"{parts.username}:***@{parts.hostname or ''}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))
    except ValueError:  # a port that is not a number: say nothing more than the scheme
        return f"{url.split('://', 1)[0]}://..."


def unavailable(url: str, exc: BaseException) -> StoreUnavailable:
    """A PostgreSQL failure as one line that names the server and what to do."""
    reason = " ".join(str(exc).split())[:300]
    return StoreUnavailable(f"PostgreSQL at {_redacted(url)} cannot keep the chat threads ({reason}): start it, "
                            "or fix --state-url / SCENEMIND_STATE_URL")


def _postgres_saver(url: str) -> Any:
    if not url.startswith(("postgresql://", "postgres://")):
        raise StoreUnavailable(f"--state-url must be a PostgreSQL URL (postgresql://user@host:port/database), "
                               f"got {_redacted(url)!r}")
    import psycopg
    from langgraph.checkpoint.postgres import PostgresSaver
    from psycopg.rows import dict_row

    try:
        # The settings PostgresSaver.from_conn_string uses; the connection lives as long as the process.
        conn = psycopg.connect(url, autocommit=True, prepare_threshold=0, row_factory=dict_row,
                               connect_timeout=CONNECT_TIMEOUT_S, application_name="scenemind-threads")
        saver = PostgresSaver(conn)
        conn.execute("SELECT pg_advisory_lock(%s, %s)", SETUP_LOCK)
        try:
            saver.setup()
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s, %s)", SETUP_LOCK)
    except psycopg.Error as exc:
        raise unavailable(url, exc) from None
    return saver


def is_postgres_failure(exc: BaseException) -> bool:
    """True for psycopg's errors (a server that went away mid-turn), without importing psycopg otherwise."""
    return type(exc).__module__.split(".")[0] == "psycopg"
