"""Start and stop real servers for the agent tests: `scenemind serve`, `chroma run`, on free 127.0.0.1 ports.

Each server runs in its own process group and is stopped by PID (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

BIN = Path(sys.executable).parent
SCENEMIND = str(BIN / "scenemind")
CHROMA = str(BIN / "chroma")
STARTUP_TIMEOUT_S = 120


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCENEMIND_")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", ANONYMIZED_TELEMETRY="False",
               LANGGRAPH_NO_VERSION_CHECK="true", TOKENIZERS_PARALLELISM="false")
    env.update(extra)
    return env


def copy_store(src: str, dst: Path) -> Path:
    """A private copy of a store folder: an embedded Chroma folder belongs to one process at a time."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("threads.sqlite*"))
    return dst


@dataclass
class Server:
    proc: subprocess.Popen
    url: str
    port: int
    log: Path
    startup_s: float = 0.0

    def stop(self, grace_s: float = 15) -> None:
        stop(self.proc, grace_s)

    def kill(self) -> None:
        """SIGKILL the whole process group at once: no shutdown code runs (a crash)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


def stop(proc: subprocess.Popen, grace_s: float = 15) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    except ProcessLookupError:
        pass


def ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def start(argv: list[str], health_url: str, url: str, port: int, log: Path, env: dict[str, str]) -> Server:
    started = time.monotonic()
    with log.open("w") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                cwd=str(log.parent))
    while not ready(health_url):
        if proc.poll() is not None:
            raise RuntimeError(f"{argv[:4]} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        if time.monotonic() - started > STARTUP_TIMEOUT_S:
            stop(proc)
            raise RuntimeError(f"{argv[:4]} not ready after {STARTUP_TIMEOUT_S}s:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)
    return Server(proc, url, port, log, time.monotonic() - started)


def serve(agent: str, data_dir: Path, work: Path, store_url: str = "", port: int | None = None,
          extra_args: tuple[str, ...] = (), **env: str) -> Server:
    """`scenemind serve AGENT` over data_dir (and a Chroma server when store_url is given)."""
    port = port or free_port()
    argv = [SCENEMIND, "--data-dir", str(data_dir)] + (["--store-url", store_url] if store_url else [])
    argv += ["serve", agent, "--port", str(port), *extra_args]
    url = f"http://127.0.0.1:{port}"
    return start(argv, f"{url}/health", url, port, work / f"serve-{agent}-{port}.log", clean_env(**env))


def chroma(path: Path, work: Path) -> Server:
    """`chroma run` from the installed chromadb over a folder (a PersistentClient folder works as is)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [CHROMA, "run", "--path", str(path), "--host", "127.0.0.1", "--port", str(port)]
    return start(argv, f"{url}/api/v2/heartbeat", url, port, work / f"chroma-{port}.log", clean_env())
