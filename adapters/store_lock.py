"""One writer at a time per data dir, across processes: an flock on `DATA_DIR/write.lock`.

Embedded Chroma is not safe with two processes writing one store (two overlapping
ingests left scenes without readable vectors), so every writer (ingest, repair,
the graph's write-back of formulas, fields and crystals) holds this lock while it
writes. The lock file holds the holder's pid and what it does, for the message
the next writer gets. The kernel drops the lock when its holder dies, so a
killed ingest never leaves a stale lock behind.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from state.errors import StoreBusy, StoreUnavailable

LOCK_NAME = "write.lock"
RETRY_S = 0.05


class WriterLock:
    """Re-entrant within a process (per thread), exclusive across processes."""

    def __init__(self, data_dir: Path | str):
        self.path = Path(data_dir) / LOCK_NAME
        self._threads = threading.RLock()
        self._depth = 0
        self._fd: int | None = None

    @contextmanager
    def hold(self, what: str, wait_s: float = 0.0) -> Iterator[None]:
        """Hold the lock while writing; StoreBusy naming the holder when it is not free within `wait_s`."""
        if not self._threads.acquire(timeout=max(wait_s, 0.0) or -1):
            raise StoreBusy(self._busy_message(what))
        try:
            if self._depth == 0:
                self._acquire(what, wait_s)
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0:
                    self._release()
        finally:
            self._threads.release()

    def held_elsewhere(self) -> bool:
        """Whether another process writes now (a cheap, momentary probe; False when the file is unreadable)."""
        if self._depth or not self.path.exists():
            return False
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        except OSError:
            return False
        finally:
            os.close(fd)  # closing drops the shared lock at once
        return False

    def holder(self) -> str:
        """What the lock file says about its holder ("pid 123 ingest"), or "" when unknown."""
        try:
            return self.path.read_text(encoding="utf-8").strip()[:200]
        except OSError:
            return ""

    def _acquire(self, what: str, wait_s: float) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StoreUnavailable(f"cannot write {self.path} ({exc.strerror}), so this {what} cannot start: "
                                   f"make {self.path.parent} writable (or write to another data dir)") from None
        deadline = time.monotonic() + max(wait_s, 0.5)  # a reader's momentary probe must not look like a writer
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise StoreBusy(self._busy_message(what)) from None
                time.sleep(RETRY_S)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} {what}\n".encode(), 0)
        self._fd = fd

    def _release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def _busy_message(self, what: str) -> str:
        holder = self.holder() or "another process"
        if holder.startswith("pid "):
            pid, _, doing = holder[4:].partition(" ")
            holder = f"{doing or 'a writer'} (pid {pid})"
        return (f"another {holder} is writing to {self.path.parent}, so this {what} cannot start: wait for it "
                "to finish, then rerun (ids are stable: nothing is doubled)")


_locks: dict[str, WriterLock] = {}
_locks_guard = threading.Lock()


def writer_lock(data_dir: Path | str) -> WriterLock:
    """The process-wide lock object of a data dir (one per dir: an flock is per open file, not per process)."""
    key = str(Path(data_dir).resolve())
    with _locks_guard:
        if key not in _locks:
            _locks[key] = WriterLock(key)
        return _locks[key]
