"""Shared fixtures: the real embedder and a demo store, built once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("LANGGRAPH_NO_VERSION_CHECK", "true")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
# Tests must not pick up a developer's own settings.
for _name in list(os.environ):
    if _name.startswith("SCENEMIND_"):
        del os.environ[_name]

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def embedder():
    from adapters.embedder import load_embedder

    return load_embedder()


@pytest.fixture(scope="session")
def demo_store(tmp_path_factory, embedder) -> str:
    """A data dir holding the bundled demo corpus (300 real passages), embedded by the default embedder."""
    from adapters.memory import open_memory
    from adapters.sources import read_sources
    from scenemind_data import DEMO_SCENES

    data_dir = str(tmp_path_factory.mktemp("demo_store"))
    open_memory(data_dir, embedder.spec, create=True).ingest(read_sources([str(DEMO_SCENES)]))
    counts = shared_store_counts(data_dir, embedder)
    yield data_dir
    # Shared by every test: none may write to it (runs are read-only unless write_back; writers copy it).
    assert shared_store_counts(data_dir, embedder) == counts, "a test wrote to the shared demo store"


def shared_store_counts(data_dir: str, embedder) -> dict[str, int]:
    from adapters.memory import Memory

    store = Memory(data_dir, embedder).store
    return {kind: store.count(kind) for kind in ("scenes", "formulas", "fields", "crystals")}


@pytest.fixture
def demo_context(demo_store):
    from state.context import Context

    return Context(data_dir=demo_store)


@pytest.fixture(scope="session")
def pg_server():
    """A real PostgreSQL server for the session (tests/integration/pg_server.py), stopped by PID at the end.

    Fails, never skips, when PostgreSQL is not installed: CI must prove the shared-state path.
    """
    import sys

    sys.path.insert(0, str(ROOT / "tests" / "integration"))
    from pg_server import PostgresMissing, start_postgres

    try:
        server = start_postgres()
    except PostgresMissing as exc:
        missing = str(exc)
    else:
        missing = ""
    if missing:
        pytest.fail(missing, pytrace=False)  # outside the except: one line, not a chained report
    yield server
    server.stop()


@pytest.fixture
def pg_url(pg_server, request) -> str:
    """The URL of a fresh, empty database on the session's PostgreSQL server, one per test."""
    import re
    import uuid

    name = re.sub(r"[^a-z0-9_]", "_", request.node.name.lower())[:40] + "_" + uuid.uuid4().hex[:8]
    return pg_server.new_database(name)
