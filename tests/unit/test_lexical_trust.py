"""Lexical evidence counts in proportion to how much of the query's wording memory holds."""

from __future__ import annotations

from adapters.coupling_index import CouplingGraph
from adapters.lexicon import scene_keys, terms_of
from nodes.resonate import lexical_trust


def english_graph() -> CouplingGraph:
    graph = CouplingGraph()
    texts = {"a": "Henry Cole was the first director of the Victoria and Albert Museum in 1852.",
             "b": "The steam engine indicator was first used in 1851.",
             "c": "Luis Mandoki directed the film Gaby: A True Story in 1987."}
    for sid, text in texts.items():
        graph.add(sid, None, scene_keys(text))
    return graph.ready()


def test_a_same_language_question_keeps_full_lexical_weight():
    graph = english_graph()
    assert lexical_trust(graph, terms_of("Who was the first director of the museum?")) == 1.0
    # words memory lacks cost a same-language question little of its lexical evidence
    assert lexical_trust(graph, terms_of("Which unusual director founded the museum in 1852?")) > 0.75


def test_a_question_in_another_language_barely_trusts_its_few_shared_words():
    graph = english_graph()
    trust = lexical_trust(graph, terms_of("Кто был первым директором музея в 1852 году?"))
    assert 0.0 < trust < 0.5  # only "1852" is shared
    assert lexical_trust(graph, terms_of("Кто был первым директором музея?")) == 0.0
