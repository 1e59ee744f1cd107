"""The eval stores under evals/.cache: keyed by the index and key versions, their vectors reused across versions."""

from __future__ import annotations

import sqlite3

import pytest

from evals.multihop import VECTORS_OF, build_store

pytestmark = pytest.mark.integration

CORPUS = [("Варшава", "Варшава — столица Польши. В Варшаве расположен Саксонский сад."),
          ("Luis Mandoki", "Luis Mandoki is a Mexican film director, born in Mexico City in 1954."),
          ("Кислород", "В 1891 году Джеймс Дьюар выделил жидкий кислород.")]


def keys_of(data_dir: str) -> set[str]:
    db = sqlite3.connect(f"{data_dir}/couplings.sqlite")
    try:
        return {k for (k,) in db.execute("SELECT k.name FROM scene_key JOIN key_name k ON k.id = scene_key.key")}
    finally:
        db.close()


def test_a_changed_keys_version_gets_a_new_store_that_keeps_the_vectors(tmp_path, embedder, monkeypatch, capfd):
    first, _ = build_store(CORPUS, embedder.spec, tmp_path)
    assert "3 added" in capfd.readouterr().err
    # An index from before lemmas, under the key of an older lexicon:
    db = sqlite3.connect(f"{first}/couplings.sqlite")
    db.execute("UPDATE key_name SET name = 't:варшаве' WHERE name = 't:варшава'")
    db.commit()
    db.close()
    monkeypatch.setattr("adapters.lexicon.KEYS_VERSION", 99)
    second, _ = build_store(CORPUS, embedder.spec, tmp_path)
    assert second != first and not (tmp_path / first).exists()
    err = capfd.readouterr().err
    assert "rebuilding its couplings index" in err and "0 added, 3 cached" in err
    assert "t:варшава" in keys_of(second) and "t:варшаве" not in keys_of(second)


def test_a_store_cached_before_versioned_keys_is_reused(tmp_path, embedder, capfd):
    current, _ = build_store(CORPUS, embedder.spec, tmp_path)
    legacy = tmp_path / (tmp_path / current / VECTORS_OF).read_text()  # the old key: embedder and passages only
    (tmp_path / current / VECTORS_OF).unlink()
    (tmp_path / current).rename(legacy)
    capfd.readouterr()
    again, _ = build_store(CORPUS, embedder.spec, tmp_path)
    assert again == current and not legacy.exists() and "0 added, 3 cached" in capfd.readouterr().err
