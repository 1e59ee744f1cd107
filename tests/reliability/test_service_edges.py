"""The services' edges (issue 10, items 13-17): non-finite numbers, keep-alive after a 500,
client errors of the OpenAI-compatible endpoint, the token's strength, the load report's store.

Real FastAPI apps: in-process through TestClient, and on a real uvicorn socket where the
connection itself is what is tested.
"""

from __future__ import annotations

import socket
import threading
import time

import httpx
import pytest
from fastapi.testclient import TestClient

from adapters.agent_protocol import EmbedderTag
from adapters.agent_service import Guard, create_agent_app
from adapters.embedder import DEFAULT_EMBEDDER
from graph.serve_cli import check_exposure
from nodes.interpret import interpret
from state.context import Context
from state.errors import SettingsError

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

DEFAULT_TAG = EmbedderTag(name=DEFAULT_EMBEDDER, dim=384)


def _settings() -> dict:
    from adapters.agent_protocol import RunSettings

    return RunSettings.of(Context()).model_dump()


def _body(probe_vector: str = "[]", offset: str = "0.0", top_k: str = "5", question: str = '"q"') -> str:
    """A probe request written by hand, so that NaN / Infinity / 1e400 reach the server as they would on the wire."""
    import json

    settings = json.dumps(_settings()).replace('"top_k": 5', f'"top_k": {top_k}')
    return ('{"embedder": {"name": "' + DEFAULT_EMBEDDER + '", "dim": 384}, "settings": ' + settings +
            ', "probe": {"id": "p1", "text": ' + question + ', "vector": ' + probe_vector +
            ', "offset": ' + offset + ', "depth": 1, "parent": null, "reason": "bridge"}}')


@pytest.fixture
def prober() -> TestClient:
    def probe(node_input, runtime):  # a real node function's shape; it must never see a non-finite number
        vector = node_input["probe"].vector
        assert all(abs(x) < 1e300 for x in vector)
        return {}

    app = create_agent_app("resonator", {"probe": probe}, Context(), DEFAULT_TAG, "none")
    return TestClient(Guard(app), raise_server_exceptions=False)


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_non_finite_numbers_are_refused_with_422(prober, value):
    vector = "[" + ", ".join(["0.1"] * 383 + [value]) + "]"
    for body in (_body(probe_vector=vector), _body(offset=value)):
        resp = prober.post("/v1/probe", content=body, headers={"Content-Type": "application/json"})
        assert resp.status_code == 422, resp.text
        assert "finite" in resp.json()["detail"]


def test_nan_in_a_setting_is_a_422_not_a_crash_of_the_422_handler(prober):
    import json

    settings = _settings()
    name = next(k for k, v in settings.items() if isinstance(v, float))
    body = _body().replace(f'"{name}": {json.dumps(settings[name])}', f'"{name}": NaN')
    assert "NaN" in body
    resp = prober.post("/v1/probe", content=body, headers={"Content-Type": "application/json"})
    assert resp.status_code == 422 and resp.json()["error"] == "AgentRefused"


def test_text_that_is_not_utf8_is_refused_with_422(prober):
    resp = prober.post("/v1/probe", content=_body(question='"Teutberga \\udcff"'),
                       headers={"Content-Type": "application/json"})
    assert resp.status_code == 422 and "UTF-8" in resp.json()["detail"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _local_port(resp: httpx.Response) -> int:
    return resp.extensions["network_stream"].get_extra_info("client_addr")[1]


def test_keep_alive_connection_survives_a_500():
    import uvicorn

    def broken(state, runtime):
        raise RuntimeError("a bug in a node")

    app = create_agent_app("interpreter", {"interpret": broken}, Context(), DEFAULT_TAG, "none")
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(Guard(app), host="127.0.0.1", port=port, log_level="critical"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        from adapters.agent_client import node_payload

        payload = node_payload("interpret", {"question": "Who directed Gaby?"}, Context())
        with httpx.Client(limits=httpx.Limits(max_connections=1, max_keepalive_connections=1)) as client:
            url = f"http://127.0.0.1:{port}"
            first = client.post(f"{url}/v1/interpret", json=payload)
            assert first.status_code == 500 and first.json()["error"] == "RuntimeError"
            time.sleep(0.2)  # time for a server that drops the connection to have dropped it
            # The same connection (same local port) serves the next request. Before, the server closed it
            # after a 500, and a client racing that close got ReadError (connection reset by peer).
            second = client.get(f"{url}/health")
            assert second.status_code == 200
            assert _local_port(second) == _local_port(first)
            assert client.post(f"{url}/v1/interpret", json=payload).status_code == 500
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_openai_endpoint_answers_client_errors_with_4xx(demo_context):
    from adapters.openai_server import create_app
    from graph.serve_cli import thinking_chat

    client = TestClient(create_app(thinking_chat(demo_context), "scenemind"))
    system_only = {"model": "scenemind", "messages": [{"role": "system", "content": "be brief"}]}
    empty = {"model": "scenemind", "messages": [{"role": "user", "content": "   "}]}
    huge = {"model": "scenemind", "messages": [{"role": "user", "content": "why " * 6_250}]}
    for stream in (False, True):
        assert client.post("/v1/chat/completions", json={**system_only, "stream": stream}).status_code == 400
        assert client.post("/v1/chat/completions", json={**empty, "stream": stream}).status_code == 400
        assert client.post("/v1/chat/completions", json={**huge, "stream": stream}).status_code == 413


def test_public_bind_needs_a_strong_token(capsys):
    from graph.store_cli import cmd_token

    for weak in ("x", "s3cret-token", "a" * 64, "ab" * 20):
        with pytest.raises(SettingsError, match="scenemind token"):
            check_exposure("0.0.0.0", weak)
    cmd_token(None)
    token = capsys.readouterr().out.strip()
    assert len(token) >= 32 and token != (cmd_token(None), capsys.readouterr().out.strip())[1]
    check_exposure("0.0.0.0", token)
    check_exposure("127.0.0.1", "x")  # loopback needs no token at all


def test_guard_compares_the_token_in_constant_time():
    import inspect

    from adapters import agent_service

    assert "hmac.compare_digest" in inspect.getsource(agent_service.Guard.__call__)


def test_load_report_names_the_store_it_ran_against():
    from evals.load import render, store_label

    result = {"errors": {}, "latencies": {}, "elapsed": 1.0}
    text = render([], result, 5, 1.0, "python -m evals.load", store_label("/data/my-corpus", "", None))
    assert "/data/my-corpus" in text and "demo store" not in text
    assert "Chroma server http://h:8000" in store_label("/d", "http://h:8000", None)
    assert "http://127.0.0.1:8100" in store_label(None, "", "http://127.0.0.1:8100")
