"""The scene store: Chroma collections of scenes, formulas and crystals in one space.

Embedded (`PersistentClient` on a folder) or a Chroma server (`HttpClient`),
same code path. We never let Chroma embed (its default function downloads a
model): vectors always come from our embedder. Each collection records the
embedder's name and dimension, and a mismatch is refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

from state.errors import EmbedderMismatch, StoreUnavailable

# Chroma's max add batch is 5,461 here; stay well under it.
ADD_BATCH = 2_000
# Set at creation: HNSW defaults lose recall on hard data and cannot be changed later.
HNSW = {"space": "cosine", "ef_construction": 200, "ef_search": 128, "max_neighbors": 32}
KINDS = ("scenes", "formulas", "crystals", "fields")


def _client(data_dir: str, store_url: str, create: bool):
    import chromadb
    from chromadb.config import Settings

    settings = Settings(anonymized_telemetry=False)
    if store_url:
        url = urlparse(store_url if "://" in store_url else f"http://{store_url}")
        try:
            client = chromadb.HttpClient(host=url.hostname or "127.0.0.1", port=url.port or 8000, settings=settings)
            client.heartbeat()
        except Exception as exc:  # the client raises several unrelated types for "down"
            raise StoreUnavailable(f"Chroma server at {store_url} is not reachable ({exc}); start it with "
                                   f"`chroma run --path DIR --host 127.0.0.1 --port {url.port or 8000}`") from exc
        return client
    path = Path(data_dir)
    if not path.exists() and not create:
        raise StoreUnavailable(f"no scene store at {path}: run `scenemind ingest FILE...` first "
                               "or point SCENEMIND_DATA_DIR at an existing store")
    path.mkdir(parents=True, exist_ok=True)
    return chromadb.PersistentClient(path=str(path / "chroma"), settings=settings)


class SceneStore:
    """Add, fetch and search scenes (and formulas, crystals) by vector."""

    def __init__(self, data_dir: str, embedder_name: str, dim: int, store_url: str = "", create: bool = False):
        self.embedder_name, self.dim = embedder_name, dim
        self.client = _client(data_dir, store_url, create)
        self.collections = {kind: self._collection(kind) for kind in KINDS}

    def _collection(self, kind: str):
        name = f"scenemind_{kind}"
        existing = {c.name if hasattr(c, "name") else c for c in self.client.list_collections()}
        if name in existing:
            col = self.client.get_collection(name, embedding_function=None)
            meta = col.metadata or {}
            if meta.get("embedder") != self.embedder_name or int(meta.get("dim", -1)) != self.dim:
                raise EmbedderMismatch(
                    f"this store was built with embedder {meta.get('embedder')!r} (dim {meta.get('dim')}), "
                    f"but {self.embedder_name!r} (dim {self.dim}) is configured: use the same embedder "
                    "(SCENEMIND_EMBEDDER) or ingest into a fresh data dir"
                )
            return col
        return self.client.get_or_create_collection(
            name,
            embedding_function=None,
            metadata={"embedder": self.embedder_name, "dim": self.dim},
            configuration={"hnsw": HNSW},
        )

    def count(self, kind: str = "scenes") -> int:
        return self.collections[kind].count()

    def existing_ids(self, ids: Sequence[str], kind: str = "scenes") -> set[str]:
        col, found = self.collections[kind], set()
        for start in range(0, len(ids), ADD_BATCH):
            found.update(col.get(ids=list(ids[start : start + ADD_BATCH]), include=[])["ids"])
        return found

    def upsert(self, ids: Sequence[str], vectors: np.ndarray, documents: Sequence[str],
               metadatas: Sequence[dict[str, Any]], kind: str = "scenes") -> None:
        col = self.collections[kind]
        for start in range(0, len(ids), ADD_BATCH):
            end = start + ADD_BATCH
            col.upsert(
                ids=list(ids[start:end]),
                embeddings=np.asarray(vectors[start:end], dtype=np.float32),
                documents=list(documents[start:end]),
                metadatas=[_clean_meta(m) for m in metadatas[start:end]],
            )

    def nearest(self, vectors: np.ndarray, k: int, kind: str = "scenes") -> list[list[tuple[str, float, str, dict]]]:
        """For each query vector, up to k (id, cosine, document, metadata), best first."""
        if len(vectors) == 0:
            return []
        # No count() first: a query on a smaller (or empty) collection just returns fewer hits.
        res = self.collections[kind].query(query_embeddings=np.asarray(vectors, dtype=np.float32), n_results=k,
                                           include=["documents", "metadatas", "distances"])
        return [
            [(i, 1.0 - float(d), doc or "", meta or {}) for i, d, doc, meta in zip(ids, dists, docs, metas)]
            for ids, dists, docs, metas in zip(res["ids"], res["distances"], res["documents"], res["metadatas"])
        ]

    def nearest_ids(self, vector: np.ndarray, k: int, kind: str = "scenes") -> list[tuple[str, float]]:
        """Up to k (id, cosine), best first: the cheap query, for callers that cache documents."""
        res = self.collections[kind].query(query_embeddings=np.asarray(vector, dtype=np.float32)[None, :],
                                           n_results=k, include=["distances"])
        return [(i, 1.0 - float(d)) for i, d in zip(res["ids"][0], res["distances"][0])]

    def get(self, ids: Sequence[str], kind: str = "scenes", vectors: bool = False) -> dict[str, dict[str, Any]]:
        """id -> {"text", "meta"[, "vector"]} for the ids that exist."""
        if not ids:
            return {}
        include = ["documents", "metadatas"] + (["embeddings"] if vectors else [])
        res = self.collections[kind].get(ids=list(ids), include=include)
        out = {}
        for n, sid in enumerate(res["ids"]):
            item = {"text": res["documents"][n], "meta": res["metadatas"][n] or {}}
            if vectors:
                item["vector"] = np.asarray(res["embeddings"][n], dtype=np.float32)
            out[sid] = item
        return out


def _clean_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """Chroma metadata takes scalars and non-empty lists only."""
    out: dict[str, Any] = {}
    for key, value in meta.items():
        if value is None or (isinstance(value, list) and not value):
            continue
        out[key] = value if isinstance(value, (str, int, float, bool, list)) else str(value)
    return out
