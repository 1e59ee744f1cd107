"""Agents as services: real `scenemind serve` processes (uvicorn) and a real Chroma server on 127.0.0.1.

One `serve all` process per store mode serves every agent under its own path.
The graph with every node remote must give what the in-process graph gives on
the same store; mismatched embedders, oversize bodies, missing tokens and
services that are down each give their clear error; a service killed mid-run
leaves the store as it was, and the run resumes from its checkpoint once the
service is back.
"""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from adapters.agent_protocol import AGENT_NODES
from adapters.embedder import DEFAULT_EMBEDDER
from agent_servers import SCENEMIND, chroma, clean_env, copy_store, free_port, serve
from scenemind_data import DEMO_QUESTION
from state.context import Context
from state.errors import AgentRefused, AgentUnavailable, EmbedderMismatch, EmptyInput, InputTooLarge

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # real servers / processes: `-m "not slow"` skips them
OTHER_QUESTION = "When was the director of the film The Goose Woman born?"


def agents_at(base: str) -> dict[str, str]:
    return {agent: f"{base}/{agent}" for agent in AGENT_NODES}


def whole_state(graph, question: str, ctx: Context) -> dict:
    """The run's final state (the graph's output is narrower: answer, evidence, probes ...; no field)."""
    final = {}
    for final in graph.stream({"question": question}, context=ctx, stream_mode="values"):
        pass
    return final


def same_thinking(remote: dict, local: dict) -> None:
    assert remote["answer"] == local["answer"]
    assert remote["citations"] == local["citations"] and remote["citations"]
    assert {k: v.score for k, v in remote["active"].items()} == {k: v.score for k, v in local["active"].items()}
    assert [p.model_dump() for p in remote["probes"]] == [p.model_dump() for p in local["probes"]]
    assert remote["formulas"] == local["formulas"] and remote["retrievals"] == local["retrievals"]


def store_snapshot(data_dir: Path) -> dict[str, list[str]]:
    """Every id in every collection, read in a child process (the service may still hold the folder)."""
    code = ("import json, sys, chromadb; from chromadb.config import Settings; "
            "c = chromadb.PersistentClient(path=sys.argv[1], settings=Settings(anonymized_telemetry=False)); "
            "print(json.dumps({k: sorted(c.get_collection('scenemind_' + k, embedding_function=None)"
            ".get(include=[])['ids']) for k in ('scenes', 'formulas', 'crystals', 'fields')}))")
    out = subprocess.run([sys.executable, "-c", code, str(data_dir / "chroma")], capture_output=True, text=True,
                         timeout=120, check=True, env=clean_env()).stdout
    return json.loads(out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("agents")


@pytest.fixture(scope="module")
def embedded(demo_store, work):
    """(url, service data dir, baseline data dir): `serve all` over one copy, the in-process run over another."""
    service_dir = copy_store(demo_store, work / "service_store")
    baseline_dir = copy_store(demo_store, work / "baseline_store")
    server = serve("all", service_dir, work)
    print(f"\nserve all (embedded) ready in {server.startup_s:.1f}s")
    yield server.url, service_dir, baseline_dir
    server.stop()


@pytest.fixture(scope="module")
def on_chroma_server(demo_store, work):
    """(agents url, Chroma url, data dir): `serve all` and the test process on one Chroma server."""
    data_dir = copy_store(demo_store, work / "server_store")
    store = chroma(data_dir / "chroma", work)  # the embedded folder, served as is
    try:
        server = serve("all", data_dir, work, store_url=store.url)
    except Exception:
        store.stop()
        raise
    print(f"\nchroma ready in {store.startup_s:.1f}s; serve all (server store) ready in {server.startup_s:.1f}s")
    yield server.url, store.url, data_dir
    server.stop()
    store.stop()


def test_all_remote_equals_in_process_embedded_store(embedded):
    from graph import graph

    url, _, baseline_dir = embedded
    local = whole_state(graph, DEMO_QUESTION, Context(data_dir=str(baseline_dir)))
    # The client has no store at all: every node, expand included, runs in the service.
    remote = whole_state(graph, DEMO_QUESTION, Context(data_dir=str(baseline_dir / "absent"), agents=agents_at(url)))
    same_thinking(remote, local)


def test_all_remote_equals_in_process_on_chroma_server(on_chroma_server):
    from graph import graph

    url, store_url, data_dir = on_chroma_server
    events = []
    remote = None
    for mode, chunk in graph.stream({"question": DEMO_QUESTION}, stream_mode=["custom", "values"],
                                    context=Context(data_dir=str(data_dir), store_url=store_url,
                                                    agents=agents_at(url))):
        if mode == "custom":
            events.append(chunk["event"])
        else:
            remote = chunk
    # The service's progress events reach the caller's custom stream.
    assert {"woke", "probes", "formulas"} <= set(events)
    local = whole_state(graph, DEMO_QUESTION, Context(data_dir=str(data_dir), store_url=store_url))
    same_thinking(remote, local)


def test_health_and_openapi_per_agent(embedded):
    url = embedded[0]
    for agent, nodes in AGENT_NODES.items():
        health = httpx.get(f"{url}/{agent}/health").json()
        assert health["agent"] == agent and health["nodes"] == list(nodes)
        assert health["embedder"] == {"name": DEFAULT_EMBEDDER, "dim": 384}
        paths = httpx.get(f"{url}/{agent}/openapi.json").json()["paths"]
        assert {f"/v1/{n}" for n in nodes} <= set(paths)


def test_mismatched_embedder_is_refused_with_409(embedded):
    from adapters.agent_client import call_node, node_payload

    url = f"{embedded[0]}/resonator"
    payload = node_payload("resonate", {"question": "q"}, Context())
    payload["embedder"] = {"name": "other-model", "dim": 768}
    resp = httpx.post(f"{url}/v1/resonate", json=payload)
    assert resp.status_code == 409
    body = resp.json()
    assert body["error"] == "EmbedderMismatch" and "other-model" in body["detail"] and DEFAULT_EMBEDDER in body["detail"]
    with pytest.raises(EmbedderMismatch, match=r"resonator agent at http://127\.0\.0\.1:\d+/resonator"):
        call_node("resonate", url, payload, 10)


def test_oversize_body_and_text_are_refused(embedded):
    from graph import graph

    url = embedded[0]
    big = httpx.post(f"{url}/resonator/v1/resonate", content=b'{"x": "' + b"x" * (5 * 1024 * 1024) + b'"}',
                     headers={"Content-Type": "application/json"})
    assert big.status_code == 413 and "request body over" in big.json()["detail"]
    # A question over the service's character bound: 413 from the service, InputTooLarge in the caller.
    with pytest.raises(InputTooLarge, match="interpreter agent at .*over this service.s limit of 20,000"):
        graph.invoke({"question": "x" * 30_000}, context=Context(agents=agents_at(url)))
    with pytest.raises(EmptyInput, match="interpreter agent at .*question is empty"):
        graph.invoke({"question": "   "}, context=Context(agents=agents_at(url)))
    # A vector of the wrong length is not taken for a scene vector.
    from adapters.agent_client import node_payload

    payload = node_payload("probe", {"probe": {"id": "p", "text": "t", "depth": 1, "reason": "residual",
                                               "vector": [0.1, 0.2]}}, Context())
    resp = httpx.post(f"{url}/resonator/v1/probe", json=payload)
    assert resp.status_code == 422 and "2 numbers" in resp.json()["detail"]


class Unavailable(http.server.BaseHTTPRequestHandler):
    """A real socket that answers every request with 503, counting them."""

    requests: list[str] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        type(self).requests.append(self.path)
        body = b'{"error": "StoreUnavailable", "detail": "busy"}'
        self.send_response(503)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def test_service_down_names_agent_and_url_after_retries():
    from graph import graph

    # A service that answers 503: the README's "3 attempts" are three requests, then the run stops.
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Unavailable)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with pytest.raises(AgentUnavailable, match=rf"interpreter agent at {url} \(interpret\) failed with 503"):
            graph.invoke({"question": DEMO_QUESTION}, context=Context(agents={"interpreter": url}))
    finally:
        server.shutdown()
        server.server_close()
    assert Unavailable.requests == ["/v1/interpret"] * 3

    port = free_port()  # nothing listens here
    agents = {"interpreter": f"http://127.0.0.1:{port}"}
    with pytest.raises(AgentUnavailable) as err:
        graph.invoke({"question": DEMO_QUESTION}, context=Context(agents=agents))
    message = str(err.value)
    assert f"interpreter agent at http://127.0.0.1:{port} is not reachable" in message
    assert f"scenemind serve interpreter --port {port}" in message


def test_openai_client_talks_to_the_decoder(embedded):
    from openai import OpenAI

    client = OpenAI(base_url=f"{embedded[0]}/decoder/v1", api_key="unused", max_retries=0, timeout=120)
    assert [m.id for m in client.models.list()] == ["scenemind"]
    reply = client.chat.completions.create(model="scenemind", messages=[{"role": "user", "content": OTHER_QUESTION}])
    answer = reply.choices[0].message.content
    # The short answer, then its evidence chain with titles and scene ids.
    assert answer.startswith("answer: ") and "\nevidence:\n  1. [" in answer and "scene s-" in answer
    assert "Clarence Brown" in answer
    pieces = [c.choices[0].delta.content for c in client.chat.completions.create(
        model="scenemind", messages=[{"role": "user", "content": OTHER_QUESTION}], stream=True)
        if c.choices and c.choices[0].delta.content]
    assert len(pieces) > 3 and "Clarence Brown" in "".join(pieces)


def test_token_is_required_off_loopback_and_enforced_when_set(work):
    refused = subprocess.run([SCENEMIND, "serve", "interpreter", "--host", "0.0.0.0", "--port", str(free_port())],
                             capture_output=True, text=True, timeout=60, env=clean_env())
    assert refused.returncode == 2 and "without a token" in refused.stderr and "SCENEMIND_TOKEN" in refused.stderr
    assert "Traceback" not in refused.stderr
    # With a token (here on loopback, which the test may bind): every call but /health needs it.
    server = serve("interpreter", work / "no_store", work, SCENEMIND_TOKEN="s3cret-token")
    try:
        assert httpx.get(f"{server.url}/health").status_code == 200
        denied = httpx.get(f"{server.url}/openapi.json")
        assert denied.status_code == 401 and "bearer token" in denied.json()["detail"]
        from adapters.agent_client import call_node, node_payload

        payload = node_payload("interpret", {"question": "Who directed Gaby?"}, Context())
        with pytest.raises(AgentRefused, match="SCENEMIND_TOKEN"):
            call_node("interpret", server.url, payload, 10)
        ok = httpx.post(f"{server.url}/v1/interpret", json=payload,
                        headers={"Authorization": "Bearer s3cret-token"})
        assert ok.status_code == 200 and ok.json()["update"]["parse"]["entities"]
    finally:
        server.stop()


def test_service_killed_mid_run_leaves_store_unchanged_and_run_resumes(demo_store, work, embedded):
    from langgraph.checkpoint.memory import InMemorySaver

    from graph.builder import build_graph

    data_dir = copy_store(demo_store, work / "kill_store")
    server = serve("all", data_dir, work)
    graph = build_graph(checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "kill"}}
    ctx = Context(agents=agents_at(server.url), write_back=True)  # the resumed run writes its field
    before = store_snapshot(data_dir)
    seen = []
    try:
        with pytest.raises(AgentUnavailable, match=rf"agent at {server.url}/\S+ is not reachable"):
            for update in graph.stream({"question": DEMO_QUESTION}, config, context=ctx, stream_mode="updates"):
                seen.extend(update)
                if "resonate" in update:
                    server.kill()  # SIGKILL: the service dies with the run half done
        assert "resonate" in seen and "formulate" not in seen
        assert store_snapshot(data_dir) == before  # nothing half-written: no formula, no field, no crystal
        assert graph.get_state(config).next  # the run stopped at a checkpoint

        server = serve("all", data_dir, work, port=server.port)  # back on the same port
        resumed = graph.invoke(None, config, context=ctx)
    finally:
        server.stop()
    # The resumed run ends as the in-process run on an identical store ends.
    from graph import graph as plain

    local = plain.invoke({"question": DEMO_QUESTION}, context=Context(data_dir=str(embedded[2])))
    assert resumed["answer"] == local["answer"] and resumed["citations"] == local["citations"]
    after = store_snapshot(data_dir)
    assert after["scenes"] == before["scenes"] and len(after["fields"]) == len(before["fields"]) + 1
