"""Calling a node that runs in an agent service: the graph side of `scenemind serve`.

`remote_capable(name, fn)` wraps a node function at graph registration. At run
time, when `Context.agents` names the node (or its agent), the wrapper POSTs
the node's input to the service and validates the reply back into the state's
types; otherwise it simply calls `fn`. Connection errors and 5xx raise a
retriable `AgentUnavailable` (the node's LangGraph `RetryPolicy` retries it);
what is still down after the retries surfaces naming the agent and its URL.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import httpx
from langgraph.types import Overwrite, RetryPolicy
from pydantic import ValidationError

import state.errors as domain
from adapters.agent_protocol import AGENT_NODES, NODE_AGENT, PROBE_NODES, NodeReply, RunSettings
from adapters.embedder import embedder_info
from state.context import Context
from state.errors import AgentRefused, AgentUnavailable, SceneMindError, SettingsError
from state.models import Probe
from state.thinking import ThinkingState

CONNECT_TIMEOUT_S = 5.0
TOKEN_ENV = "SCENEMIND_TOKEN"


def _retry_on(exc: Exception) -> bool:
    return isinstance(exc, AgentUnavailable) and exc.retriable


# Attached to every node at registration; matches only agent errors, so an in-process node never retries.
AGENT_RETRY = RetryPolicy(initial_interval=0.25, backoff_factor=2.0, max_interval=2.0, max_attempts=3,
                          retry_on=_retry_on)


def agent_url(agents: dict[str, str], node: str) -> str:
    """The service URL for a node: its own name wins over its agent's name."""
    url = agents.get(node) or agents.get(NODE_AGENT.get(node, ""), "")
    return url.rstrip("/")


@lru_cache(maxsize=8)
def embedder_tag(spec: str) -> dict[str, Any]:
    """Name and dimension of an embedder, read from its config (no model load: a remote run needs none)."""
    name, dim = embedder_info(spec)
    return {"name": name, "dim": dim}


_clients: dict[tuple[str, float], httpx.Client] = {}
_clients_lock = threading.Lock()


def _http(url: str, timeout_s: float) -> httpx.Client:
    """One pooled client per (service, timeout) per process; httpx clients are thread-safe."""
    with _clients_lock:
        key = (url, timeout_s)
        if key not in _clients:
            _clients[key] = httpx.Client(timeout=httpx.Timeout(timeout_s, connect=CONNECT_TIMEOUT_S),
                                         limits=httpx.Limits(max_connections=64, max_keepalive_connections=16))
        return _clients[key]


def _headers() -> dict[str, str]:
    token = os.environ.get(TOKEN_ENV, "")
    return {"Authorization": f"Bearer {token}"} if token else {}


def _start_hint(agent: str, url: str) -> str:
    port = httpx.URL(url).port or 80
    return f"start it with `scenemind serve {agent} --port {port}` or drop it from SCENEMIND_AGENTS"


# Domain errors a service may report by name and the client raises again as themselves.
_BY_NAME: dict[str, type[SceneMindError]] = {
    name: cls for name, cls in vars(domain).items()
    if isinstance(cls, type) and issubclass(cls, SceneMindError) and cls not in (domain.SceneFileError,)
}


def _refusal(agent: str, node: str, url: str, resp: httpx.Response) -> SceneMindError:
    try:
        body = resp.json()
    except ValueError:
        body = {}
    detail = body.get("detail") if isinstance(body, dict) else None
    if not isinstance(detail, str):  # FastAPI's own 422 lists the fields that failed
        detail = json.dumps(detail)[:2000] if detail else resp.text[:2000]
    where = f"{agent} agent at {url} ({node})"
    if resp.status_code >= 500:
        return AgentUnavailable(f"{where} failed with {resp.status_code}: {detail}")
    cls = _BY_NAME.get(body.get("error", "") if isinstance(body, dict) else "", AgentRefused)
    if resp.status_code == 409:
        cls = domain.EmbedderMismatch
    elif resp.status_code == 413 and cls is AgentRefused:
        cls = domain.InputTooLarge
    elif resp.status_code in (401, 403):
        detail += f" (set {TOKEN_ENV} to the service's token)"
    err = cls(f"{where}: {detail}") if cls is not AgentUnavailable else cls(f"{where}: {detail}", retriable=False)
    return err


def call_node(node: str, url: str, payload: dict[str, Any], timeout_s: float) -> NodeReply:
    """POST one node's input; the reply validated, or a domain error naming the agent and URL."""
    agent = NODE_AGENT.get(node, node)
    try:
        resp = _http(url, timeout_s).post(f"{url}/v1/{node}", content=json.dumps(payload),
                                          headers={"Content-Type": "application/json", **_headers()})
    except httpx.TimeoutException as exc:
        # A read timeout may mean the service did the work: do not repeat a node that writes.
        retriable = isinstance(exc, (httpx.ConnectTimeout, httpx.PoolTimeout))
        raise AgentUnavailable(f"{agent} agent at {url} did not answer {node} in time ({type(exc).__name__}); "
                               f"raise SCENEMIND_AGENT_TIMEOUT_S or check the service", retriable=retriable) from exc
    except httpx.TransportError as exc:
        raise AgentUnavailable(f"{agent} agent at {url} is not reachable ({type(exc).__name__}: {exc}); "
                               + _start_hint(agent, url)) from exc
    if resp.status_code != 200:
        raise _refusal(agent, node, url, resp)
    try:
        return NodeReply.model_validate_json(resp.content)
    except ValueError as exc:
        raise AgentUnavailable(f"{agent} agent at {url} answered {node} with something that is not a node reply "
                               f"({str(exc)[:300]}); is that URL a scenemind agent?", retriable=False) from exc


def node_payload(node: str, state: Any, ctx: Context) -> dict[str, Any]:
    try:
        settings = RunSettings.of(ctx).model_dump()
    except ValidationError as exc:
        bad = ", ".join(f"{e['loc'][0]}={e['input']!r} ({e['msg']})" for e in exc.errors())
        raise SettingsError(f"run settings an agent service does not accept: {bad}") from exc
    body: dict[str, Any] = {"embedder": embedder_tag(ctx.embedder), "settings": settings}
    if node in PROBE_NODES:
        probe = state["probes"][0] if state.get("probes") else state["probe"]  # the graph sends a one-item list
        probe = probe if isinstance(probe, Probe) else Probe.model_validate(probe)
        # A probe's vector is left out of every dump (the state holds none); one a caller set still travels.
        body["probe"] = probe.model_dump(mode="json") | ({"vector": probe.vector} if probe.vector else {})
    else:
        st = state if isinstance(state, ThinkingState) else ThinkingState.model_validate(state)
        body["state"] = st.model_dump(mode="json")
    return body


def as_update(reply: NodeReply) -> dict[str, Any]:
    """The reply as the partial update a local node would have returned (typed, overwrites kept)."""
    update = {name: getattr(reply.update, name) for name in reply.update.model_fields_set}
    for name in reply.overwrite:
        if name in update:
            update[name] = Overwrite(update[name])
    return update


def remote_capable(name: str, fn: Callable[..., dict]) -> Callable[..., dict]:
    """`fn`, or a call to the agent service that `Context.agents` names for this node."""

    def node(state: Any, runtime: Any) -> dict:
        ctx = getattr(runtime, "context", None)
        ctx = ctx if isinstance(ctx, Context) else Context()
        unknown = set(ctx.agents) - known_names()
        if unknown:
            raise SettingsError(f"SCENEMIND_AGENTS names {sorted(unknown)}, which are neither agents "
                                f"({', '.join(AGENT_NODES)}) nor nodes ({', '.join(NODE_AGENT)})")
        url = agent_url(ctx.agents, name)
        if not url:
            return fn(state, runtime)
        reply = call_node(name, url, node_payload(name, state, ctx), ctx.agent_timeout_s)
        writer = getattr(runtime, "stream_writer", None)
        for event in reply.events:
            if writer is not None:
                writer(event)
        return as_update(reply)

    node.__name__, node.__doc__ = name, fn.__doc__
    return node


def known_names() -> set[str]:
    return set(AGENT_NODES) | set(NODE_AGENT)
