import numpy as np

from nodes.expand import residual, stop_reason
from nodes.formulate import chains, link_scenes
from nodes.resonate import spread_activation
from state.context import Context
from state.models import Recalled


def rec(sid: str, score: float = 0.5) -> Recalled:
    return Recalled(id=sid, text=sid, score=score)


def test_stop_rules_fixed_point_depth_and_budget():
    ctx = Context(max_depth=2, retrieval_budget=5)
    assert stop_reason([], 0, 0, ctx).startswith("fixed point")
    assert stop_reason([rec("a")], 2, 1, ctx).startswith("max depth")
    assert stop_reason([rec("a")], 1, 5, ctx).startswith("retrieval budget")
    assert stop_reason([rec("a")], 1, 4, ctx) is None


def test_residual_removes_what_the_scenes_explain():
    field = np.array([1.0, 1.0, 0.0])
    rest = residual(field, [np.array([1.0, 0.0, 0.0])])
    assert np.allclose(rest, [0.0, 1.0, 0.0])
    assert np.allclose(residual(field, [np.array([1.0, 0, 0]), np.array([0, 1.0, 0])]), 0.0)


def test_spread_prefers_rare_keys_and_query_keys():
    key_scenes = {"e:rare": ["seed", "bridge"], "e:common": ["seed", "x1", "x2", "x3"], "e:q": ["direct"]}
    rarity = {"e:rare": 0.9, "e:common": 0.2, "e:q": 0.8}
    out = spread_activation({"seed": 1.0}, {"seed": ["e:rare", "e:common"]}, ["e:q"], key_scenes, rarity)
    assert out["bridge"] > out["x1"] > 0
    assert out["direct"] == 0.8
    assert "seed" not in out  # a seed does not activate itself


def test_scenes_sharing_a_rare_entity_form_one_chain():
    scenes = [rec("a", 0.9), rec("b", 0.8), rec("c", 0.7), rec("d", 0.6)]
    keys = {"a": ["e:x", "e:y"], "b": ["e:y"], "c": ["e:x"], "d": ["e:z"]}
    links = link_scenes(scenes, keys, {"e:x": 0.9, "e:y": 0.5})
    assert {(c.source, c.target, c.relation) for c in links} == {("a", "b", "e:y"), ("a", "c", "e:x")}
    assert chains(scenes, links) == [["a", "c", "b"]]  # strongest link first, d stays out
