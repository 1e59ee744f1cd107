"""The couplings index: which scenes share which keys (entities, titles, terms).

A SQLite file beside the embedded store (one writer at a time, any number of
readers, atomic commits, so a killed ingest never leaves half a scene). Rarity
weights come from document frequency: a key shared by 3 scenes couples more
than one shared by 300.
"""

from __future__ import annotations

import math
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS scene (id TEXT PRIMARY KEY, title TEXT);
CREATE TABLE IF NOT EXISTS scene_key (scene_id TEXT NOT NULL, key TEXT NOT NULL, PRIMARY KEY (scene_id, key));
CREATE INDEX IF NOT EXISTS scene_key_by_key ON scene_key (key);
"""


class CouplingIndex:
    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(SCHEMA)
        self._lock = threading.Lock()

    def add(self, scenes: Iterable[tuple[str, str | None, Sequence[str]]]) -> int:
        """Add (scene id, title, keys) rows in one transaction; returns scenes newly added."""
        rows = list(scenes)
        with self._lock, self._db:
            before = self._db.total_changes
            self._db.executemany("INSERT OR IGNORE INTO scene (id, title) VALUES (?, ?)", [(s, t) for s, t, _ in rows])
            added = self._db.total_changes - before
            self._db.executemany(
                "INSERT OR IGNORE INTO scene_key (scene_id, key) VALUES (?, ?)",
                [(sid, key) for sid, _, keys in rows for key in set(keys)],
            )
        return added

    def existing_ids(self, ids: Sequence[str]) -> set[str]:
        found: set[str] = set()
        for start in range(0, len(ids), 500):
            chunk = list(ids[start : start + 500])
            q = f"SELECT id FROM scene WHERE id IN ({','.join('?' * len(chunk))})"
            with self._lock:
                found.update(r[0] for r in self._db.execute(q, chunk))
        return found

    def count(self) -> tuple[int, int]:
        """(scenes, couplings)."""
        with self._lock:
            scenes = self._db.execute("SELECT COUNT(*) FROM scene").fetchone()[0]
            links = self._db.execute("SELECT COUNT(*) FROM scene_key").fetchone()[0]
        return scenes, links

    def keys_of(self, scene_ids: Sequence[str]) -> dict[str, list[str]]:
        if not scene_ids:
            return {}
        q = f"SELECT scene_id, key FROM scene_key WHERE scene_id IN ({','.join('?' * len(scene_ids))})"
        out: dict[str, list[str]] = {sid: [] for sid in scene_ids}
        with self._lock:
            for sid, key in self._db.execute(q, list(scene_ids)):
                out[sid].append(key)
        return out

    def document_frequency(self, keys: Sequence[str]) -> dict[str, int]:
        if not keys:
            return {}
        q = f"SELECT key, COUNT(*) FROM scene_key WHERE key IN ({','.join('?' * len(keys))}) GROUP BY key"
        with self._lock:
            found = dict(self._db.execute(q, list(keys)).fetchall())
        return {k: found.get(k, 0) for k in keys}

    def scenes_with(self, keys: Sequence[str], max_scenes: int) -> dict[str, list[str]]:
        """key -> scene ids, for keys shared by at most max_scenes scenes (commoner keys do not couple)."""
        df = self.document_frequency(keys)
        usable = [k for k, n in df.items() if 0 < n <= max_scenes]
        if not usable:
            return {}
        q = f"SELECT key, scene_id FROM scene_key WHERE key IN ({','.join('?' * len(usable))})"
        out: dict[str, list[str]] = {k: [] for k in usable}
        with self._lock:
            for key, sid in self._db.execute(q, usable):
                out[key].append(sid)
        return out

    def rarity(self, keys: Sequence[str]) -> dict[str, float]:
        """Inverse document frequency in [0, 1]: 1 for a key in one scene, 0 for one in every scene."""
        n = max(self.count()[0], 2)
        return {k: max(0.0, math.log(n / max(df, 1)) / math.log(n)) for k, df in self.document_frequency(keys).items()}

    def close(self) -> None:
        self._db.close()
