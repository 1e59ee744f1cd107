"""The test PostgreSQL helper itself: it starts a real server, creates databases, and stops by PID."""

from __future__ import annotations

import psycopg
import pytest

from pg_server import pid_alive, start_postgres

pytestmark = pytest.mark.integration


def test_a_server_starts_serves_a_new_database_and_stops():
    server = start_postgres()
    try:
        url = server.new_database("helper_check")
        assert url.endswith(f"127.0.0.1:{server.port}/helper_check")
        with psycopg.connect(url) as conn:
            conn.execute("CREATE TABLE t (x int)")
            conn.execute("INSERT INTO t VALUES (41), (1)")
            assert conn.execute("SELECT sum(x), current_database() FROM t").fetchone() == (42, "helper_check")
        assert pid_alive(server.pid)
    finally:
        server.stop()
    assert not pid_alive(server.pid)
    assert not server.folder.exists()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(server.url, connect_timeout=2)


def test_the_fixture_gives_each_test_an_empty_database(pg_url, pg_server):
    with psycopg.connect(pg_url) as conn:
        tables = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()[0]
        conn.execute("CREATE TABLE mine (x int)")
    assert tables == 0
    assert pg_url != pg_server.url
