"""What a LangGraph user sees of a run: narrow input/output schemas, a small state without vectors,
plain updates, registered checkpoint types, one probe per bridge, settings checked on entry, review."""

from __future__ import annotations

import json
import logging
import sqlite3

import pytest
from langgraph.types import Command, Overwrite

from graph import build_graph, graph
from scenemind_data import DEMO_QUESTION
from state.context import Context
from state.errors import SettingsError
from state.thinking import plain

pytestmark = pytest.mark.integration


def _walk(value):
    yield value
    if isinstance(value, dict):
        for v in value.values():
            yield from _walk(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _walk(v)
    elif hasattr(value, "model_fields"):
        for name in type(value).model_fields:
            yield from _walk(getattr(value, name))


def _float_runs(text: str, length: int = 50) -> bool:
    """Whether the JSON holds a list of `length` or more numbers (a vector)."""
    data = json.loads(text)
    return any(isinstance(v, list) and len(v) >= length and all(isinstance(x, float) for x in v) for v in _walk(data))


def test_schemas_offer_the_question_and_return_the_answer():
    assert set(graph.get_input_jsonschema()["properties"]) == {"question"}
    assert set(graph.get_output_jsonschema()["properties"]) == {"answer", "evidence", "citations", "probes",
                                                                "formulas", "crystals", "retrievals"}
    assert "probe" not in graph.stream_channels_list  # the probe node's input adds no stray state key


def test_state_holds_no_vectors_and_updates_hold_no_wrappers(demo_context):
    sizes, wrappers = [], []
    final = None
    for mode, chunk in graph.stream({"question": DEMO_QUESTION}, context=demo_context,
                                    stream_mode=["values", "updates"]):
        if mode == "values":
            text = json.dumps(plain(chunk))
            assert not _float_runs(text), "a vector in the streamed values"
            sizes.append(len(text))
            final = chunk
        else:
            wrappers += [v for v in _walk(chunk) if isinstance(v, Overwrite)]
    assert not wrappers
    print(f"\nvalues: {len(sizes)} events, {sum(sizes):,} chars, final {sizes[-1]:,} chars")
    assert sizes[-1] < 60_000 and sum(sizes) < 350_000  # 121 KB and 719 KB when vectors rode along
    # Each probe of a step is one bridge: the same entity reached from two parents is probed once.
    probes = final["probes"]
    assert len({p.id for p in probes}) == len(probes) == final["retrievals"] - 1
    assert len({(p.depth, p.target) for p in probes}) == len(probes)


def test_output_is_plain_json_and_the_answer(demo_context):
    out = graph.invoke({"question": DEMO_QUESTION}, context=demo_context)
    assert set(out) <= {"answer", "evidence", "citations", "probes", "formulas", "crystals", "retrievals"}
    data = json.loads(json.dumps(plain(out)))
    assert data["answer"] == "Mexico City" and data["evidence"][0]["title"] == "Gaby: A True Story"
    assert all("vector" not in p for p in data["probes"]) and data["formulas"][0]["chain"]


def test_a_sqlite_thread_reads_back_typed_without_unregistered_type_warnings(demo_context, tmp_path, caplog):
    from langgraph.checkpoint.sqlite import SqliteSaver

    saver = SqliteSaver(sqlite3.connect(str(tmp_path / "threads.sqlite"), check_same_thread=False))
    threaded = build_graph(checkpointer=saver)
    config = {"configurable": {"thread_id": "t"}}
    with caplog.at_level(logging.WARNING):
        threaded.invoke({"question": DEMO_QUESTION}, config, context=demo_context)
        again = build_graph(checkpointer=SqliteSaver(saver.conn)).get_state(config).values
    assert not [r for r in caplog.records if "unregistered type" in r.getMessage()]
    assert type(again["scene"]).__name__ == "Scene" and type(again["evidence"][0]).__name__ == "Evidence"
    assert again["answer"] == "Mexico City"


# What `langgraph dev` does with the exported graph: attach its own saver with `copy()`, then read the
# thread back on every turn and on resume. A subprocess, because LangGraph reads the strict-mode switch
# at import and warns once per type per process.
_SERVER_LIKE = """
import json, logging, sys
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command
from graph import graph
from state.context import Context
records = []
logging.getLogger().addHandler(type("H", (logging.Handler,), {"emit": lambda self, r: records.append(r.getMessage())})())
served = graph.copy(update={"checkpointer": InMemorySaver()})
ctx = Context(data_dir=sys.argv[1], review=True)
config = {"configurable": {"thread_id": "t"}}
answers = []
for q in sys.argv[2:]:
    served.invoke({"question": q}, config, context=ctx)
    answers.append(served.invoke(Command(resume={"drop": []}), config, context=ctx)["answer"])
print(json.dumps({"answers": answers, "warnings": [m for m in records if "msgpack" in m or "registered" in m]}))
"""


@pytest.mark.parametrize("strict", ["false", "true"])
def test_a_served_graph_reads_its_threads_back_without_warnings_or_blocks(demo_store, strict):
    import os
    import subprocess
    import sys

    env = {**os.environ, "LANGGRAPH_STRICT_MSGPACK": strict}
    done = subprocess.run([sys.executable, "-c", _SERVER_LIKE, demo_store, DEMO_QUESTION, DEMO_QUESTION],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["answers"] == ["Mexico City", "Mexico City"]
    assert out["warnings"] == []


@pytest.mark.parametrize("context,message", [
    ({"top_k": "abc"}, "setting top_k (SCENEMIND_TOP_K) must be an integer, got 'abc'"),
    ({"topk": 3}, "unknown setting(s) 'topk' (did you mean 'top_k'?)"),
    ({"max_depth": -1}, "max_depth must not be negative"),
])
def test_context_is_checked_on_entry_with_one_clear_message(demo_store, context, message):
    with pytest.raises(SettingsError) as err:
        graph.invoke({"question": DEMO_QUESTION}, context={"data_dir": demo_store, **context})
    assert message in str(err.value)
    assert isinstance(err.value, RuntimeError)  # what the LangGraph server hands to its client with the message


def test_review_pauses_before_formulate_and_applies_drop_and_pin(demo_store):
    from langgraph.checkpoint.memory import InMemorySaver

    reviewed = build_graph(checkpointer=InMemorySaver())
    ctx = Context(data_dir=demo_store, review=True)
    config = {"configurable": {"thread_id": "r"}}
    first = reviewed.invoke({"question": DEMO_QUESTION}, config, context=ctx)
    shown = first["__interrupt__"][0].value
    assert reviewed.get_state(config).next == ("review",) and first["answer"] == ""
    ids = [s["id"] for s in shown["field"]]
    titles = {s["id"]: s["title"] for s in shown["field"]}
    mandoki = next(i for i in ids if titles[i] == "Luis Mandoki")
    out = reviewed.invoke(Command(resume={"drop": [mandoki]}), config, context=ctx)
    assert mandoki not in out["citations"] and out["answer"] != "Mexico City"
    # Off by default: no pause.
    assert "__interrupt__" not in build_graph(checkpointer=InMemorySaver()).invoke(
        {"question": DEMO_QUESTION}, {"configurable": {"thread_id": "n"}}, context=Context(data_dir=demo_store))
