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


def test_lexical_evidence_held_sparsely_is_bm25_z_scaled_plus_the_bonus_over_every_scene():
    """Resonance's lexical evidence, kept only for scenes with a query term or entity, equals its definition
    computed by hand over every scene: Okapi BM25 z-scaled over the n scenes held, times its weight, plus the
    title/mention bonus, times trust. Covers a compacted base, a tail of later adds and a removed scene."""
    import math

    from nodes.resonate import Lexical

    rng = np.random.default_rng(3)
    words = ["capital", "france", "europe", "film", "river", "mountain", "music", "born", "city", "war"]
    names = ["Luis Mandoki", "Paris", "Rome", "Mexico City"]
    texts = {f"s{i}": " ".join(rng.choice(words, size=int(rng.integers(3, 9)))) + f". {names[i % 4]} is here."
             for i in range(60)}
    g = CouplingGraph()
    held = {}
    for i, (sid, text) in enumerate(texts.items()):
        title = names[i % 4] if i % 7 == 0 else None
        held[sid] = scene_keys(text, title)
        g.add(sid, title, held[sid])
        if i == 39:
            g.ready()  # the first 40 in the base, the rest in the tail
    g.remove("s5")
    del held["s5"]
    g.ready()
    ctx = Context()
    terms, entities, trust = ["capital", "france", "film", "film", "war"], {"luis mandoki": 0.8, "paris": 1.3}, 0.7
    # BM25 by hand
    n = len(held)
    length = {sid: sum(c for k, c in keys.items() if k.startswith("t:")) for sid, keys in held.items()}
    avg = sum(length.values()) / n
    bm = {}
    for sid, keys in held.items():
        score = 0.0
        for t in set(terms):
            f = keys.get(f"t:{t}", 0)
            df = sum(1 for k in held.values() if f"t:{t}" in k)
            if f and df:
                idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
                score += idf * f * 2.2 / (f + 1.2 * (1 - 0.75 + 0.75 * length[sid] / avg))
        bm[sid] = score
    mean = sum(bm.values()) / n
    std = math.sqrt(sum(v * v for v in bm.values()) / n - mean * mean)
    expected = {}
    for sid, keys in held.items():
        bonus = 0.0
        for entity, weight in entities.items():
            if g.titles[g.position[sid]] and g.titles[g.position[sid]].lower() == entity:
                bonus = max(bonus, ctx.title_weight)
            if f"e:{entity}" in keys:
                bonus += ctx.mention_weight * weight / math.log(n)
        expected[sid] = (ctx.bm25_weight * (bm[sid] - mean) / std + bonus) * trust
    lexical = Lexical(g, ctx, terms, entities, trust)
    got = {sid: lexical.at(g.position[sid]) for sid in held}
    assert max(abs(got[s] - expected[s]) for s in held) < 1e-9
    assert len(lexical.where) < n  # held sparsely: scenes without a query term or entity share `rest`
    assert lexical.rest < 0
    best = lexical.best(8)
    assert [g.ids[p] for p in best] == sorted((s for s in held if expected[s] > 0), key=lambda s: -expected[s])[:8]


def test_top_breaks_ties_by_position():
    from nodes.resonate import _top

    scores = np.array([0.5, 2.0, 0.5, 2.0, 0.0, 0.5, -1.0])
    assert _top(scores, 3) == [1, 3, 0]
    assert _top(scores, 10) == [1, 3, 0, 2, 5]  # never a score <= 0
    many = np.tile([1.0, 0.25, 1.0, 3.0], 100)  # long enough for numpy's unstable sorts to reorder ties
    assert _top(many, 120) == [3 + 4 * i for i in range(100)] + [4 * (i // 2) + 2 * (i % 2) for i in range(20)]


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
