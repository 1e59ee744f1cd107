"""Start and stop a real PostgreSQL server for the tests: its own folder, a free 127.0.0.1 port, stopped by PID.

initdb and postgres refuse to run as root, so under root the server runs as the `postgres` OS user and its
folder (a fresh one in the system temp dir: pytest's own is closed to other users) is handed to that user.
Durability is off (fsync, full-page writes): a test server lives for one session and is thrown away.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from agent_servers import free_port

STARTUP_TIMEOUT_S = 60
INSTALL = "sudo apt-get install -y --no-install-recommends postgresql"
SUPERUSER = "postgres"


class PostgresMissing(RuntimeError):
    pass


def bindir() -> Path:
    """The folder holding initdb, postgres and pg_ctl: `pg_config --bindir`, else the newest Debian version's."""
    candidates = []
    if shutil.which("pg_config"):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True)
        candidates.append(out.stdout.strip())
    # /usr/bin/pg_config may come from libpq-dev alone, without a server beside it.
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(re.sub(r"\D", "", p) or 0),
                         reverse=True)
    for folder in candidates:
        if folder and all((Path(folder) / exe).is_file() for exe in ("initdb", "postgres", "pg_ctl")):
            return Path(folder)
    raise PostgresMissing(f"PostgreSQL server binaries (initdb, postgres, pg_ctl) not found: install them with "
                          f"`{INSTALL}` (.ci/run does it)")


def _as_server_user() -> dict:
    """Popen arguments that drop root to the `postgres` OS user (no-op for anyone else)."""
    if os.geteuid() != 0:
        return {}
    return {"user": SUPERUSER, "group": SUPERUSER, "extra_groups": []}


def pid_alive(pid: int) -> bool:
    """True while the process exists and is not a zombie waiting to be reaped."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return not re.search(r"^State:\s+Z", status, re.M)


@dataclass
class PgServer:
    folder: Path
    bindir: Path
    port: int
    proc: subprocess.Popen
    startup_s: float = 0.0

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def url(self) -> str:
        return self.url_of(SUPERUSER)

    def url_of(self, database: str) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def new_database(self, name: str) -> str:
        """Create an empty database and return its URL."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.url, autocommit=True, connect_timeout=10) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url_of(name)

    def stop(self, grace_s: float = 30) -> None:
        """pg_ctl stop -m fast, then SIGKILL by PID; the folder goes too."""
        try:
            if self.proc.poll() is None:
                subprocess.run([str(self.bindir / "pg_ctl"), "stop", "-D", str(self.folder / "data"), "-m", "fast",
                                "-w", "-t", str(int(grace_s))], capture_output=True, timeout=grace_s + 10,
                               cwd=self.folder, **_as_server_user())
                try:
                    self.proc.wait(timeout=grace_s)
                except subprocess.TimeoutExpired:
                    pass
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)  # the postmaster and its backends
                self.proc.wait(timeout=10)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)


def _accepts(url: str) -> bool:
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=2) as conn:
            conn.execute("SELECT 1")
        return True
    except psycopg.OperationalError:
        return False


def start_postgres() -> PgServer:
    """initdb a fresh cluster in a temp folder and run postgres on a free 127.0.0.1 port until it answers."""
    bins = bindir()
    started = time.monotonic()
    folder = Path(tempfile.mkdtemp(prefix="scenemind-pg-"))
    data, log = folder / "data", folder / "postgres.log"
    if os.geteuid() == 0:
        shutil.chown(folder, SUPERUSER, SUPERUSER)
    env = {**os.environ, "LC_ALL": "C", "TZ": "UTC"}
    init = subprocess.run([str(bins / "initdb"), "-D", str(data), "-U", SUPERUSER, "-A", "trust", "-E", "UTF8",
                           "--locale=C", "--no-sync"], capture_output=True, text=True, env=env, cwd=folder,
                          **_as_server_user())
    if init.returncode:
        shutil.rmtree(folder, ignore_errors=True)
        raise RuntimeError(f"initdb exited with {init.returncode}:\n{(init.stdout + init.stderr)[-3000:]}")
    port = free_port()
    argv = [str(bins / "postgres"), "-D", str(data), "-p", str(port), "-c", "listen_addresses=127.0.0.1",
            "-c", f"unix_socket_directories={folder}", "-c", "fsync=off", "-c", "full_page_writes=off",
            "-c", "synchronous_commit=off", "-c", "max_connections=200"]
    with log.open("w") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=folder,
                                start_new_session=True, **_as_server_user())
    server = PgServer(folder, bins, port, proc)
    while not _accepts(server.url):
        if proc.poll() is not None:
            text = log.read_text()[-3000:]
            shutil.rmtree(folder, ignore_errors=True)
            raise RuntimeError(f"postgres exited with {proc.returncode}:\n{text}")
        if time.monotonic() - started > STARTUP_TIMEOUT_S:
            text = log.read_text()[-3000:]
            server.stop()
            raise RuntimeError(f"postgres not ready after {STARTUP_TIMEOUT_S}s:\n{text}")
        time.sleep(0.1)
    server.startup_s = time.monotonic() - started
    return server
