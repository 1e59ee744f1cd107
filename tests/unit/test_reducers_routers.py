import json

from langgraph.types import Send

from graph.routers import after_expand
from state.models import Probe, Recalled
from state.thinking import AskOutput, ThinkingState, keep_strongest, plain


def rec(sid: str, score: float, epoch: int = 0) -> Recalled:
    return Recalled(id=sid, text=sid, score=score, epoch=epoch)


def test_keep_strongest_keeps_higher_score_per_scene():
    left = {"a": rec("a", 0.5), "b": rec("b", 0.9)}
    right = {"a": rec("a", 0.7), "b": rec("b", 0.1), "c": rec("c", 0.3)}
    merged = keep_strongest(left, right)
    assert {k: v.score for k, v in merged.items()} == {"a": 0.7, "b": 0.9, "c": 0.3}
    assert left["a"].score == 0.5  # inputs are not mutated


def test_a_newer_turn_replaces_the_older_turns_field_without_overwrite_wrappers():
    old = {"a": rec("a", 5.0, epoch=1), "b": rec("b", 4.0, epoch=1)}
    carried = {"a": rec("a", 2.5, epoch=2)}  # build_scene carries the strongest, discounted, re-tagged
    merged = keep_strongest(old, carried)
    assert {k: v.score for k, v in merged.items()} == {"a": 2.5}
    # the new turn's resonance then merges by max as usual
    assert set(keep_strongest(merged, {"c": rec("c", 1.0, epoch=2)})) == {"a", "c"}


def test_reducers_merge_parallel_probe_writes_in_a_real_graph():
    """Two Send branches write the same field; the reducer decides the merge."""
    from langgraph.graph import END, START, StateGraph

    def fan(state: ThinkingState):
        return [Send("branch", {"sid": s}) for s in ("a", "b")]

    def branch(payload: dict):
        return {"active": {"shared": rec("shared", 0.4 if payload["sid"] == "a" else 0.8)}}

    g = StateGraph(ThinkingState)
    g.add_node("branch", branch)
    g.add_conditional_edges(START, fan, ["branch"])
    g.add_edge("branch", END)
    out = g.compile().invoke({"question": "q"})
    assert out["active"]["shared"].score == 0.8


def test_after_expand_sends_pending_probes_only_and_each_once():
    probes = [Probe(id=f"p{i}", text=str(i), depth=1, reason="bridge") for i in range(3)]
    state = ThinkingState(question="q", probes=probes + [probes[2]], pending=["p0", "p2"])
    out = after_expand(state)
    assert isinstance(out, list) and all(isinstance(s, Send) and s.node == "probe" for s in out)
    assert [s.arg["probes"][0].id for s in out] == ["p0", "p2"]


def test_after_expand_goes_to_formulate_when_nothing_pending():
    probes = [Probe(id="p0", text="0", depth=1, reason="bridge")]
    assert after_expand(ThinkingState(question="q", probes=probes, pending=[])) == "formulate"


def test_state_round_trips_through_json_and_holds_no_vectors():
    state = ThinkingState(question="q", active={"a": rec("a", 0.5)},
                          probes=[Probe(id="p", text="t", depth=1, reason="residual", vector=[0.3])])
    dumped = state.model_dump_json()
    assert "0.3" not in dumped and '"vector"' not in dumped.replace('"vector": []', "")
    again = ThinkingState.model_validate_json(dumped)
    assert again.active == state.active and again.probes[0].id == "p"


def test_plain_makes_an_output_json_ready():
    out = AskOutput(answer="x", probes=[Probe(id="p", text="t", depth=1, reason="bridge", vector=[0.1])])
    data = {k: getattr(out, k) for k in AskOutput.model_fields}
    text = json.dumps(plain(data))
    assert json.loads(text)["probes"][0]["id"] == "p" and "vector" not in json.loads(text)["probes"][0]
