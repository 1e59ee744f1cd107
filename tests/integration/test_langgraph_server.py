"""The graph served by `langgraph dev` (what LangGraph Studio talks to) runs end to end over HTTP.

A real in-memory LangGraph server is started from `langgraph.json` at the repo
root, on a free port, over a copy of the demo store (the server's run writes
formulas and crystals; the session's shared store must not be written by a
second process). One run is streamed through `langgraph_sdk`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from agent_servers import free_port, ready, stop

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # real servers / processes: `-m "not slow"` skips them

ROOT = Path(__file__).resolve().parents[2]
LANGGRAPH = str(Path(sys.executable).with_name("langgraph"))
QUESTION = "Where was the director of the film Gaby: A True Story born?"
STARTUP_TIMEOUT_S = 90
STEPS = ("interpret", "resonate", "expand", "formulate", "decode")


@pytest.fixture(scope="module")
def server(demo_store, tmp_path_factory):
    """(url, startup seconds) of a `langgraph dev` server over a copy of the demo store."""
    assert (ROOT / "langgraph.json").exists(), "langgraph.json at the repo root is what `langgraph dev` serves"
    work = tmp_path_factory.mktemp("langgraph_server")
    data_dir = work / "store"
    shutil.copytree(demo_store, data_dir)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCENEMIND_")}
    env.update(LANGGRAPH_NO_VERSION_CHECK="true", SCENEMIND_DATA_DIR=str(data_dir), HF_HUB_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", ANONYMIZED_TELEMETRY="False")
    log_path = work / "server.log"
    with log_path.open("w") as log:
        start = time.monotonic()
        proc = subprocess.Popen(
            [LANGGRAPH, "dev", "--no-browser", "--no-reload", "--port", str(port), "--host", "127.0.0.1"],
            cwd=str(ROOT), env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        while not ready(f"{url}/ok"):
            if proc.poll() is not None:
                pytest.fail(f"langgraph dev exited with {proc.returncode}:\n{log_path.read_text()[-4000:]}")
            if time.monotonic() - start > STARTUP_TIMEOUT_S:
                pytest.fail(f"langgraph dev not ready after {STARTUP_TIMEOUT_S}s:\n{log_path.read_text()[-4000:]}")
            time.sleep(0.25)
        startup = time.monotonic() - start
        print(f"\nlanggraph dev ready in {startup:.1f}s")
        yield url, startup, log_path
    finally:
        stop(proc)


def test_langgraph_dev_streams_a_run_of_scenemind(server):
    from langgraph_sdk import get_sync_client

    url, startup, log_path = server
    client = get_sync_client(url=url, api_key=None)
    assert any(a["graph_id"] == "scenemind" for a in client.assistants.search(graph_id="scenemind"))

    thread = client.threads.create()
    started = time.monotonic()
    updated: list[str] = []
    final: dict = {}
    errors: list = []
    for part in client.runs.stream(thread["thread_id"], "scenemind", input={"question": QUESTION},
                                   stream_mode=["updates", "values"]):
        if part.event == "updates":
            updated.extend(part.data)
        elif part.event == "values":
            final = part.data
        elif part.event == "error":
            errors.append(part.data)
    took = time.monotonic() - started
    print(f"run streamed in {took:.1f}s; steps: {updated}")
    assert not errors, f"{errors}\n{log_path.read_text()[-4000:]}"

    for step in STEPS:
        assert step in updated, f"no update from {step}: got {updated}"
    assert updated.index("interpret") < updated.index("resonate") < updated.index("formulate") \
        < updated.index("decode")

    # What the stream ended with is what the thread keeps.
    values = client.threads.get_state(thread["thread_id"])["values"]
    for state in (final, values):
        assert isinstance(state.get("answer"), str) and state["answer"].strip()
        assert isinstance(state.get("citations"), list) and state["citations"]
    assert values["answer"] == final["answer"] and values["citations"] == final["citations"]
    # Two hops: the film's passage names the director, the director's passage holds the birthplace.
    cited = set(values["citations"])
    assert _scene_id("Gaby: A True Story") in cited and _scene_id("Luis Mandoki") in cited, values["answer"]


def _scene_id(title: str) -> str:
    from adapters.sources import read_sources
    from scenemind_data import DEMO_SCENES

    return next(r.scene_id for r in read_sources([str(DEMO_SCENES)]) if r.title == title)


def _run(client, thread_id: str, **kwargs) -> tuple[list, list, dict]:
    """(events, errors, last values) of one streamed run."""
    events, errors, final = [], [], {}
    for part in client.runs.stream(thread_id, "scenemind", stream_mode=["updates", "values"], **kwargs):
        events.append(part)
        if part.event == "error":
            errors.append(part.data)
        elif part.event == "values":
            final = part.data
    return events, errors, final


def test_studio_sees_narrow_schemas_and_plain_updates(server):
    import json

    from langgraph_sdk import get_sync_client

    url, _, _ = server
    client = get_sync_client(url=url, api_key=None)
    assistant = client.assistants.search(graph_id="scenemind")[0]
    schemas = client.assistants.get_schemas(assistant["assistant_id"])
    assert set(schemas["input_schema"]["properties"]) == {"question"}
    assert {"answer", "evidence", "citations", "probes", "formulas"} <= set(schemas["output_schema"]["properties"])
    assert "probe" not in schemas["state_schema"]["properties"]
    import dataclasses

    from state.context import Context

    # Studio's settings panel: every Context field, as the server serves the schema.
    assert {f.name for f in dataclasses.fields(Context)} == set(schemas["context_schema"]["properties"])

    thread = client.threads.create()
    events, errors, final = _run(client, thread["thread_id"], input={"question": QUESTION})
    assert not errors, errors
    updates = json.dumps([e.data for e in events if e.event == "updates"])
    assert "__overwrite__" not in updates and final["answer"] == "Mexico City"
    assert len(json.dumps(final)) < 60_000  # no vectors in what the thread keeps


@pytest.mark.parametrize("context,message", [
    ({"top_k": "abc"}, "setting top_k (SCENEMIND_TOP_K) must be an integer, got 'abc'"),
    ({"data_dir": "/nonexistent/scenemind-store"}, "/nonexistent/scenemind-store"),
])
def test_errors_reach_the_client_with_their_message(server, context, message):
    from langgraph_sdk import get_sync_client

    url, _, _ = server
    client = get_sync_client(url=url, api_key=None)
    thread = client.threads.create()
    _, errors, _ = _run(client, thread["thread_id"], input={"question": QUESTION}, context=context)
    assert errors and message in errors[0]["message"], errors
    assert "internal error" not in errors[0]["message"]


def test_review_interrupts_in_studio_and_resumes_with_an_edit(server):
    from langgraph_sdk import get_sync_client

    url, _, log_path = server
    client = get_sync_client(url=url, api_key=None)
    thread = client.threads.create()
    _, errors, _ = _run(client, thread["thread_id"], input={"question": QUESTION}, context={"review": True})
    assert not errors, errors
    state = client.threads.get_state(thread["thread_id"])
    assert state["next"] == ["review"]
    shown = state["tasks"][0]["interrupts"][0]["value"]
    field = {s["title"]: s["id"] for s in shown["field"]}
    assert {"Gaby: A True Story", "Luis Mandoki"} <= set(field)
    _, errors, final = _run(client, thread["thread_id"], command={"resume": {"drop": [field["Luis Mandoki"]]}},
                            context={"review": True})
    assert not errors, errors
    assert field["Luis Mandoki"] not in final["citations"] and final["answer"] != "Mexico City"
    assert client.threads.get_state(thread["thread_id"])["next"] == []
    # A second turn on the thread, kept as it is: the server reads the typed thread back again.
    _run(client, thread["thread_id"], input={"question": QUESTION}, context={"review": True})
    _, errors, kept = _run(client, thread["thread_id"], command={"resume": {"drop": []}}, context={"review": True})
    assert not errors and kept["answer"] == "Mexico City"
    log = log_path.read_text()
    assert "unregistered type" not in log and "Blocked deserialization" not in log
