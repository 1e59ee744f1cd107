"""Where chat threads keep their checkpoints: a SQLite file in the data dir, or PostgreSQL at `state_url`.

With a Chroma server (`--store-url`) and `--state-url`, a thread begun by a process on one
machine is continued by a process on another: LangGraph's PostgresSaver holds every
checkpoint in the shared database, beside the couplings (adapters/postgres.py). Either saver
carries scenemind's state types (see `graph.builder.registered`).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from adapters.postgres import SETUP_LOCK, connect, redact
from state.errors import StoreUnavailable


def open_checkpointer(sqlite_path: Path, state_url: str = "") -> Any:
    """PostgresSaver (tables set up) when state_url is given, else a SqliteSaver on sqlite_path."""
    from graph.builder import registered

    if state_url:
        return registered(_postgres_saver(state_url))
    from langgraph.checkpoint.sqlite import SqliteSaver

    sqlite_path.parent.mkdir(parents=True, exist_ok=True)
    return registered(SqliteSaver(sqlite3.connect(str(sqlite_path), check_same_thread=False, timeout=30)))


def unavailable(url: str, exc: BaseException) -> StoreUnavailable:
    """A PostgreSQL failure in the middle of a conversation as one line that names the server."""
    reason = " ".join(str(exc).split())[:300]
    return StoreUnavailable(f"PostgreSQL at {redact(url)} stopped answering while keeping the chat thread "
                            f"({reason}): start it and rerun; the turn resumes from its last checkpoint")


def _postgres_saver(url: str) -> Any:
    import psycopg
    from langgraph.checkpoint.postgres import PostgresSaver
    from psycopg.rows import dict_row

    conn = connect(url)  # one clear line for a server that is down or a URL that is not PostgreSQL's
    # What PostgresSaver.from_conn_string sets; the connection lives as long as the process.
    conn.row_factory, conn.prepare_threshold = dict_row, 0
    saver = PostgresSaver(conn)
    try:
        conn.execute("SELECT pg_advisory_lock(%s, %s)", SETUP_LOCK)  # the saver's migrations, one process at a time
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
