from langgraph.types import Send

from graph.routers import after_expand
from state.models import Probe, Recalled
from state.thinking import ThinkingState, append_probes, keep_strongest, union


def rec(sid: str, score: float) -> Recalled:
    return Recalled(id=sid, text=sid, score=score)


def test_keep_strongest_keeps_higher_score_per_scene():
    left = {"a": rec("a", 0.5), "b": rec("b", 0.9)}
    right = {"a": rec("a", 0.7), "b": rec("b", 0.1), "c": rec("c", 0.3)}
    merged = keep_strongest(left, right)
    assert {k: v.score for k, v in merged.items()} == {"a": 0.7, "b": 0.9, "c": 0.3}
    assert left["a"].score == 0.5  # inputs are not mutated


def test_append_probes_skips_duplicate_ids():
    p1, p2 = Probe(id="p1", text="x", depth=1, reason="bridge"), Probe(id="p2", text="y", depth=1, reason="residual")
    assert [p.id for p in append_probes([p1], [p1, p2])] == ["p1", "p2"]


def test_union_is_ordered_and_unique():
    assert union(["a", "b"], ["b", "c", "a", "d"]) == ["a", "b", "c", "d"]


def test_reducers_merge_parallel_probe_writes_in_a_real_graph():
    """Two Send branches write the same fields; the reducers decide the merge."""
    from langgraph.graph import END, START, StateGraph

    def fan(state: ThinkingState):
        return [Send("branch", {"sid": s}) for s in ("a", "b")]

    def branch(payload: dict):
        return {"active": {"shared": rec("shared", 0.4 if payload["sid"] == "a" else 0.8)},
                "retrievals": 1, "covered": [payload["sid"]]}

    g = StateGraph(ThinkingState)
    g.add_node("branch", branch)
    g.add_conditional_edges(START, fan, ["branch"])
    g.add_edge("branch", END)
    out = g.compile().invoke({"question": "q"})
    assert out["retrievals"] == 2
    assert out["active"]["shared"].score == 0.8
    assert sorted(out["covered"]) == ["a", "b"]


def test_after_expand_sends_pending_probes_only():
    probes = [Probe(id=f"p{i}", text=str(i), depth=1, reason="bridge") for i in range(3)]
    state = ThinkingState(question="q", probes=probes, pending=["p0", "p2"])
    out = after_expand(state)
    assert isinstance(out, list) and all(isinstance(s, Send) and s.node == "probe" for s in out)
    assert [s.arg["probe"].id for s in out] == ["p0", "p2"]


def test_after_expand_goes_to_formulate_when_nothing_pending():
    probes = [Probe(id="p0", text="0", depth=1, reason="bridge")]
    assert after_expand(ThinkingState(question="q", probes=probes, pending=[])) == "formulate"


def test_state_round_trips_through_json():
    state = ThinkingState(question="q", field=[0.1, 0.2], active={"a": rec("a", 0.5)},
                          probes=[Probe(id="p", text="t", depth=1, reason="residual", vector=[0.3])])
    again = ThinkingState.model_validate_json(state.model_dump_json())
    assert again == state
