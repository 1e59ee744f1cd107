"""Agent protocol, client and service pieces, in-process (no model, no server: FastAPI's TestClient)."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from langgraph.types import Overwrite

from adapters.agent_client import AGENT_RETRY, _refusal, agent_url, as_update, call_node, node_payload, remote_capable
from adapters.agent_protocol import EmbedderTag, NodeReply, RunSettings
from adapters.agent_service import Guard, create_agent_app
from adapters.embedder import DEFAULT_EMBEDDER
from graph.serve_cli import check_exposure
from nodes.interpret import interpret
from state.context import Context
from state.thinking import ThinkingState
from state.errors import (
    AgentRefused,
    AgentUnavailable,
    EmbedderMismatch,
    EmptyInput,
    InputTooLarge,
    SettingsError,
)

DEFAULT_TAG = EmbedderTag(name=DEFAULT_EMBEDDER, dim=384)


@pytest.fixture
def interpreter() -> TestClient:
    app = create_agent_app("interpreter", {"interpret": interpret}, Context(max_input_chars=100), DEFAULT_TAG, "none")
    return TestClient(Guard(app, max_body_bytes=10_000))


def test_agents_come_from_env_as_json(monkeypatch):
    monkeypatch.setenv("SCENEMIND_AGENTS", '{"resonator": "http://127.0.0.1:8103"}')
    assert Context().agents == {"resonator": "http://127.0.0.1:8103"}
    assert Context(agents={"decode": "http://h"}).agents == {"decode": "http://h"}  # explicit wins
    monkeypatch.setenv("SCENEMIND_AGENTS", "resonator=http://x")
    with pytest.raises(SettingsError, match="JSON object"):
        Context()


def test_agent_url_prefers_the_node_over_its_agent():
    agents = {"resonator": "http://a/", "probe": "http://b"}
    assert agent_url(agents, "resonate") == "http://a" and agent_url(agents, "expand") == "http://a"
    assert agent_url(agents, "probe") == "http://b" and agent_url(agents, "decode") == ""


def test_unknown_agent_names_are_refused():
    node = remote_capable("interpret", interpret)
    runtime = type("R", (), {"context": Context(agents={"resonater": "http://x"})})()
    with pytest.raises(SettingsError, match="resonater"):
        node({"question": "q"}, runtime)


def test_public_bind_needs_a_token():
    check_exposure("127.0.0.1", "")
    check_exposure("::1", "")
    check_exposure("localhost", "")
    check_exposure("0.0.0.0", "k7Qx-9vLm2Rt8Wz4Np6Ys1Bd3Hf5Jc0Ue")
    for host in ("0.0.0.0", "192.168.1.5", "example.org"):
        with pytest.raises(SettingsError, match="SCENEMIND_TOKEN"):
            check_exposure(host, "")


def test_node_call_roundtrip_keeps_types(interpreter):
    question = "Who directed the film Gaby: A True Story, and where was its director born?"
    payload = node_payload("interpret", {"question": question}, Context())
    assert payload["embedder"] == {"name": DEFAULT_EMBEDDER, "dim": 384}
    resp = interpreter.post("/v1/interpret", json=payload)
    assert resp.status_code == 200, resp.text
    update = as_update(NodeReply.model_validate(resp.json()))
    # Over the wire the node's update is what the node returns in process: same keys, types and values.
    runtime = type("R", (), {"context": Context(), "stream_writer": None})()
    local = interpret(ThinkingState(question=question), runtime)
    assert set(update) == set(local) == {"parse"}
    assert type(update["parse"]) is type(local["parse"]) and update["parse"] == local["parse"]
    assert update["parse"].model_dump() == local["parse"].model_dump() and update["parse"].entities


def test_service_refusals(interpreter):
    ok = node_payload("interpret", {"question": "q?"}, Context())
    other = {**ok, "embedder": {"name": "e5-large", "dim": 1024}}
    resp = interpreter.post("/v1/interpret", json=other)
    assert resp.status_code == 409 and resp.json()["error"] == "EmbedderMismatch"
    assert "e5-large" in resp.json()["detail"] and "SCENEMIND_EMBEDDER" in resp.json()["detail"]
    long = {**ok, "state": {"question": "x" * 101}}
    resp = interpreter.post("/v1/interpret", json=long)
    assert resp.status_code == 413 and "over this service's limit of 100" in resp.json()["detail"]
    resp = interpreter.post("/v1/interpret", json={**ok, "state": {"question": "  "}})
    assert resp.status_code == 422 and resp.json()["error"] == "EmptyInput"
    resp = interpreter.post("/v1/interpret", json={**ok, "settings": {**ok["settings"], "top_k": 10**6}})
    assert resp.status_code == 422 and "top_k" in resp.text
    resp = interpreter.post("/v1/interpret", content=b"x" * 20_000, headers={"Content-Type": "application/json"})
    assert resp.status_code == 413 and "request body over 10,000 bytes" in resp.json()["detail"]

    def chunked():
        for _ in range(20):
            yield b"x" * 1_000

    resp = interpreter.post("/v1/interpret", content=chunked(), headers={"Content-Type": "application/json"})
    assert resp.status_code == 413  # no Content-Length: counted as it arrives


def test_guard_token():
    app = FastAPI()
    app.get("/health")(lambda: {"ok": True})
    app.get("/v1/x")(lambda: {"x": 1})
    client = TestClient(Guard(app, token="s3cret"))
    assert client.get("/health").status_code == 200
    assert client.get("/v1/x").status_code == 401
    assert client.get("/v1/x", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/v1/x", headers={"Authorization": "Bearer s3cret"}).json() == {"x": 1}


@pytest.mark.parametrize("status,body,error", [
    (409, {"error": "EmbedderMismatch", "detail": "other space"}, EmbedderMismatch),
    (413, {"error": "InputTooLarge", "detail": "too long"}, InputTooLarge),
    (422, {"error": "EmptyInput", "detail": "empty"}, EmptyInput),
    (422, {"detail": [{"loc": ["body", "state"], "msg": "Field required"}]}, AgentRefused),
    (401, {"error": "AgentRefused", "detail": "missing or wrong bearer token"}, AgentRefused),
    (503, {"error": "StoreUnavailable", "detail": "no store"}, AgentUnavailable),
    (500, {"error": "KeyError", "detail": "bug"}, AgentUnavailable),
])
def test_refusals_become_domain_errors_naming_agent_and_url(status, body, error):
    err = _refusal("resonator", "resonate", "http://127.0.0.1:9", httpx.Response(status, json=body))
    assert type(err) is error and "resonator agent at http://127.0.0.1:9 (resonate)" in str(err)
    assert AGENT_RETRY.retry_on(err) == (status >= 500)


def test_retry_policy_matches_only_retriable_agent_errors():
    assert AGENT_RETRY.retry_on(AgentUnavailable("down"))
    assert not AGENT_RETRY.retry_on(AgentUnavailable("read timeout", retriable=False))
    assert not AGENT_RETRY.retry_on(ValueError("bug")) and not AGENT_RETRY.retry_on(EmptyInput("empty"))


def test_nothing_listening_is_a_retriable_error_with_a_start_hint():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connections are refused
        with pytest.raises(AgentUnavailable, match=rf"scenemind serve formulator --port {port}") as err:
            call_node("formulate", f"http://127.0.0.1:{port}", {}, 2)
    assert err.value.retriable


def test_overwrites_survive_the_wire():
    reply = NodeReply(agent="scene-former", node="build_scene", update={"retrievals": 0, "probes": [], "depth": 0},
                      overwrite=["retrievals", "probes"])
    update = as_update(NodeReply.model_validate_json(reply.model_dump_json()))
    assert isinstance(update["retrievals"], Overwrite) and update["retrievals"].value == 0
    assert isinstance(update["probes"], Overwrite) and update["depth"] == 0


def test_run_settings_carry_numbers_only():
    settings = RunSettings.of(Context(top_k=7))
    assert settings.top_k == 7
    assert not ({"data_dir", "store_url", "state_url", "decoder", "embedder", "agents", "max_input_chars"}
                & set(type(settings).model_fields))
    with pytest.raises(SettingsError, match="top_k"):
        node_payload("interpret", {"question": "q"}, Context(top_k=10**6))
