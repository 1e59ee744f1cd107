import numpy as np
import pytest

from adapters.coupling_index import CouplingGraph, CouplingIndex, SceneRow
from adapters.lexicon import scene_keys
from nodes.expand import bridges, residual, stop_reason
from nodes.formulate import chains, link_scenes
from state.context import Context
from state.models import Recalled

SCENES = [
    ("a", "Gaby: A True Story", "Gaby: A True Story is a film directed by Luis Mandoki."),
    ("b", "Luis Mandoki", "Luis Mandoki was born in Mexico City. He directed films."),
    ("c", "Mexico City", "Mexico City is the capital of Mexico."),
    ("d", "Rome", "Rome is the capital of Italy. Italy is in Europe."),
    ("e", "Paris", "Paris is the capital of France. France is in Europe."),
]


def rec(sid: str, score: float = 0.5) -> Recalled:
    return Recalled(id=sid, text=sid, score=score)


@pytest.fixture
def graph() -> CouplingGraph:
    g = CouplingGraph()
    for sid, title, text in SCENES:
        g.add(sid, title, scene_keys(text, title))
    return g.ready()


def test_stop_rules_fixed_point_depth_and_budget():
    ctx = Context(max_depth=2, retrieval_budget=5)
    assert stop_reason([], 0, 0, ctx).startswith("fixed point")
    assert stop_reason([rec("a")], 2, 1, ctx).startswith("max depth")
    assert stop_reason([rec("a")], 1, 5, ctx).startswith("retrieval budget")
    assert stop_reason([rec("a")], 1, 4, ctx) is None


def test_residual_removes_what_the_scenes_explain():
    field = np.array([1.0, 1.0, 0.0])
    assert np.allclose(residual(field, [np.array([1.0, 0.0, 0.0])]), [0.0, 1.0, 0.0])
    assert np.allclose(residual(field, [np.array([1.0, 0, 0]), np.array([0, 1.0, 0])]), 0.0)


def test_rarity_weights_rare_entities_above_common_ones(graph):
    assert graph.df("europe") == 2 and graph.df("luis mandoki") == 2 and graph.df("france") == 1
    assert graph.idf("france") > graph.idf("europe") > 0


def test_spreading_from_a_seed_reaches_the_scene_it_shares_a_rare_entity_with(graph):
    act = graph.spread({graph.position["a"]: 1.0}, {}, restart=0.3, iterations=15)
    # a -> "luis mandoki" -> b, and nothing of a leads to Rome or Paris
    assert act[graph.position["b"]] > 0
    assert act[graph.position["d"]] == act[graph.position["e"]] == 0
    # seeding with an entity wakes the scenes that hold it
    by_entity = graph.spread({}, {"europe": 1.0}, restart=0.3, iterations=15)
    assert by_entity[graph.position["d"]] > 0 and by_entity[graph.position["a"]] == 0


def test_lexical_evidence_bm25_title_and_mention(graph):
    bm = graph.bm25(["capital", "france"])
    assert bm.argmax() == graph.position["e"] and bm[graph.position["a"]] == 0
    bonus = graph.entity_bonus({"luis mandoki": 1.0}, title_weight=1.0, mention_weight=0.5)
    assert bonus[graph.position["b"]] > bonus[graph.position["a"]] > 0 == bonus[graph.position["d"]]


def test_query_entities_resolve_titles_against_memory(graph):
    found = graph.query_entities("Where was the director of the film Gaby: A True Story born?")
    assert "gaby a true story" in found
    assert not {"where", "director", "film"} & set(found)


def test_bridges_are_new_entities_that_lead_somewhere(graph):
    # from "a", the question names Gaby; Luis Mandoki is new and held by two scenes
    assert bridges(graph, "a", "Where was the director of Gaby: A True Story born?", set(), 2)[0] == "luis mandoki"
    assert "luis mandoki" not in bridges(graph, "a", "Where was Luis Mandoki born?", set(), 2)
    assert "luis mandoki" not in bridges(graph, "a", "Where was he born?", {"luis mandoki"}, 2)  # already probed


def test_dense_moments_are_exact(tmp_path):
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(40, 8))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = CouplingIndex(tmp_path / "c.sqlite")
    index.add(SceneRow(f"s{i}", None, {"t:x": 1}, v) for i, v in enumerate(vectors[:25]))
    index.add(SceneRow(f"s{i}", None, {"t:x": 1}, v) for i, v in enumerate(vectors[20:], start=20))  # 5 repeats
    q = vectors[0]
    mean, std = index.graph().dense_moments(q)
    assert index.count()[0] == 40
    assert mean == pytest.approx(float((vectors @ q).mean())) and std == pytest.approx(float((vectors @ q).std()))


def test_scenes_sharing_a_rare_entity_form_one_chain():
    scenes = [rec("a", 0.9), rec("b", 0.8), rec("c", 0.7), rec("d", 0.6)]
    keys = {"a": ["x", "y"], "b": ["y"], "c": ["x"], "d": ["z"]}
    links = link_scenes(scenes, keys, {"x": 0.9, "y": 0.5})
    assert {(c.source, c.target, c.relation) for c in links} == {("a", "b", "y"), ("a", "c", "x")}
    assert chains(scenes, links) == [["a", "c", "b"]]  # strongest link first, d stays out
