"""Agent services: FastAPI apps that run graph nodes for other processes.

Each agent of the source design (interpreter, scene-former, resonator,
formulator, decoder, archetype-guide) is an app with `POST /v1/{node}` for each
of its nodes, `GET /health` and OpenAPI (`/docs`, `/openapi.json`). The node
functions are handed in by the caller (`graph/serve_cli.py`): this module
knows HTTP, not the graph. A request carries the embedder's name and dimension;
vectors from another embedder are refused (409) rather than compared in the
wrong space.

Limits live in `Guard`, an ASGI wrapper around the whole app (mounted apps
included): a bearer token when one is configured, and a bound on body bytes.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from langgraph.runtime import Runtime
from langgraph.types import Overwrite

from adapters.agent_protocol import (
    AGENT_NODES,
    PROBE_NODES,
    EmbedderTag,
    ErrorBody,
    Health,
    NodeReply,
    ProbeRequest,
    StateRequest,
    StateUpdate,
)
from state.context import Context
from state.errors import AgentRefused, EmbedderMismatch, InputTooLarge, SceneMindError
from state.thinking import ThinkingState

log = logging.getLogger("scenemind.agents")

DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024  # a depth-2 state with its probes is ~200 KB
PROBE_TEXT_SLACK = 2_000  # a probe is the question plus a bridge key or a short label


def status_of(exc: SceneMindError) -> int:
    if isinstance(exc, EmbedderMismatch):
        return 409
    if isinstance(exc, InputTooLarge):
        return 413
    if isinstance(exc, ValueError):  # EmptyInput, AgentRefused, config errors: the request is at fault
        return 422
    return 503  # the store, a model or another agent is unavailable here


def _error(status: int, error: str, detail: str, agent: str = "", node: str | None = None) -> JSONResponse:
    return JSONResponse(ErrorBody(error=error, detail=detail, agent=agent, node=node).model_dump(), status_code=status)


def _check_space(tag: EmbedderTag, mine: EmbedderTag, agent: str) -> None:
    if (tag.name, tag.dim) != (mine.name, mine.dim):
        raise EmbedderMismatch(
            f"the request's vectors come from embedder {tag.name!r} (dim {tag.dim}), but this {agent} service "
            f"thinks in {mine.name!r} (dim {mine.dim}): run the graph and the service with the same "
            "SCENEMIND_EMBEDDER (and a store built by it)")


def _check_vector(what: str, vector: list[float], dim: int) -> None:
    if vector and len(vector) != dim:
        raise AgentRefused(f"{what} has {len(vector)} numbers, but the embedder's dimension is {dim}")


def _check_text(what: str, text: str, limit: int) -> None:
    if len(text) > limit:
        raise InputTooLarge(f"{what} is {len(text):,} characters, over this service's limit of {limit:,} "
                            "(SCENEMIND_MAX_INPUT_CHARS)")


def _fit_errors(errors: Any) -> str:
    """Validation errors as one line: where and why, without the (possibly unprintable) input."""
    parts = []
    for err in list(errors)[:10]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "malformed request: " + "; ".join(parts)


def _reply(agent: str, node: str, update: dict[str, Any], events: list[dict]) -> JSONResponse:
    overwrite = [k for k, v in update.items() if isinstance(v, Overwrite)]
    plain = {k: (v.value if isinstance(v, Overwrite) else v) for k, v in update.items()}
    typed = StateUpdate.model_validate(plain).model_dump(mode="json", include=set(plain))
    return JSONResponse({"agent": agent, "node": node, "update": typed, "overwrite": overwrite, "events": events})


def create_agent_app(agent: str, nodes: dict[str, Callable[..., dict]], context: Context, embedder: EmbedderTag,
                     store: str, extra: FastAPI | None = None,
                     forget: Callable[[list[str], list[str]], dict[str, Any]] | None = None) -> FastAPI:
    """One agent's app: a route per node, each running `nodes[name](input, runtime)` in this process.

    `context` holds the service's own resources (data dir, store URL, embedder, decoder); a request
    brings only the run settings. `extra` (the decoder's OpenAI-compatible app) adds its routes.
    `forget(sources, scene_ids)` (the resonator's memory) adds `DELETE /v1/scenes`.
    """
    unknown = set(nodes) - set(AGENT_NODES.get(agent, nodes))
    assert not unknown, f"{agent} does not run {unknown}"
    context = replace(context, agents={})  # a service runs its nodes here, never forwards them
    app = FastAPI(title=f"scenemind {agent}", version="0.1.0",
                  description=f"The {agent} agent of scenemind: nodes {', '.join(nodes)}.")

    @app.exception_handler(SceneMindError)
    async def domain_error(request: Request, exc: SceneMindError) -> JSONResponse:
        node = request.url.path.rsplit("/", 1)[-1]
        return _error(status_of(exc), type(exc).__name__, str(exc), agent, node)

    @app.exception_handler(RequestValidationError)
    async def malformed(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's own handler echoes the input back, and a NaN in it cannot be written as JSON (a 500).
        return JSONResponse({"error": "AgentRefused", "detail": _fit_errors(exc.errors()), "agent": agent,
                             "node": request.url.path.rsplit("/", 1)[-1]}, status_code=422)

    @app.exception_handler(Exception)
    async def bug(request: Request, exc: Exception) -> JSONResponse:
        log.exception("%s failed on %s", agent, request.url.path)
        return _error(500, type(exc).__name__, f"internal error in the {agent} service ({exc}); see its log", agent)

    @app.get("/health", response_model=Health)
    def health() -> Health:
        return Health(agent=agent, nodes=list(nodes), embedder=embedder, store=store)

    def run(node: str, fn: Callable[..., dict], settings: dict[str, Any], node_input: Any) -> JSONResponse:
        ctx = replace(context, **settings)
        events: list[dict] = []
        update = fn(node_input, Runtime(context=ctx, stream_writer=events.append))
        return _reply(agent, node, update, events)

    def probe_route(name: str, fn: Callable[..., dict]) -> Callable[[ProbeRequest], JSONResponse]:
        def route(req: ProbeRequest) -> JSONResponse:
            _check_space(req.embedder, embedder, agent)
            _check_vector("probe.vector", req.probe.vector, embedder.dim)
            _check_text("the probe's text", req.probe.text, context.max_input_chars + PROBE_TEXT_SLACK)
            return run(name, fn, req.settings.model_dump(), {"probe": req.probe})
        return route

    def state_route(name: str, fn: Callable[..., dict]) -> Callable[[StateRequest], JSONResponse]:
        def route(req: StateRequest) -> JSONResponse:
            _check_space(req.embedder, embedder, agent)
            st: ThinkingState = req.state
            _check_text("the question", st.question, context.max_input_chars)
            if st.scene is not None:  # the graph's state holds no vectors; a hand-made one may
                _check_vector("state.scene.vector", st.scene.vector, embedder.dim)
            return run(name, fn, req.settings.model_dump(), st)
        return route

    errors = {409: {"model": ErrorBody}, 413: {"model": ErrorBody}, 503: {"model": ErrorBody}}
    for name, fn in nodes.items():
        probe = name in PROBE_NODES
        route = probe_route(name, fn) if probe else state_route(name, fn)
        app.post(f"/v1/{name}", response_model=NodeReply, responses=errors,
                 summary=f"run {name} on {'one probe' if probe else 'the thinking state'}")(route)

    if forget is not None:
        @app.delete("/v1/scenes", responses=errors, summary="forget scenes: every scene of a source, or given ids")
        def delete_scenes(source: list[str] = Query(default=[], description="a file path or document id (repeatable)"),
                          scene_id: list[str] = Query(default=[], description="a scene id (repeatable)")) -> JSONResponse:
            if not source and not scene_id:
                raise AgentRefused("forget what? give ?source=PATH_OR_ID or ?scene_id=ID (each repeatable)")
            return JSONResponse(forget(source, scene_id))

    if extra is not None:
        # Its API routes join this app (not a mount), so they show in this agent's OpenAPI too.
        shared = APIRouter()
        shared.routes.extend(r for r in extra.routes if isinstance(r, APIRoute))
        app.include_router(shared)
    return app


def create_all_app(apps: dict[str, FastAPI]) -> FastAPI:
    """Every agent in one process, each under `/{agent}` (so `/resonator/v1/resonate`)."""
    outer = FastAPI(title="scenemind agents", version="0.1.0",
                    description="All scenemind agents; each has its own /health and /docs under /{agent}.")

    @outer.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "agents": {name: f"/{name}" for name in apps}}

    for name, sub in apps.items():
        outer.mount(f"/{name}", sub)
    return outer


class Guard:
    """ASGI wrapper: bearer token (when configured) on everything but /health, and a body-size bound.

    It reads the body itself (up to the bound) so that a chunked upload without Content-Length
    is bounded too, then replays it to the app.
    """

    def __init__(self, app: Callable, token: str = "", max_body_bytes: int = DEFAULT_MAX_BODY_BYTES):
        self.app, self.max_body_bytes = app, max_body_bytes
        self.expected = f"Bearer {token}".encode() if token else b""

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        if self.expected and not scope["path"].endswith("/health"):
            if not hmac.compare_digest(headers.get(b"authorization", b""), self.expected):
                await _send_json(send, 401, "AgentRefused",
                                 "missing or wrong bearer token: send `Authorization: Bearer <SCENEMIND_TOKEN>`")
                return
        too_big = (f"request body over {self.max_body_bytes:,} bytes: send less (a state without old probes, "
                   "a shorter question) or raise the service's --max-body-bytes")
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            await _send_json(send, 413, "InputTooLarge", too_big)
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                await _send_json(send, 413, "InputTooLarge", too_big)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body, replayed = b"".join(chunks), False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for the client's disconnect, as Starlette expects

        state = {"started": False, "done": False}

        async def tracked(message: dict) -> None:
            if message["type"] == "http.response.start":
                state["started"] = True
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                state["done"] = True
            await send(message)

        try:
            await self.app(scope, replay, tracked)
        except Exception:
            # Starlette re-raises a bug after its 500 is sent; the server would then drop the keep-alive
            # connection and the client's next request on it fails. The answer is out, so keep the line.
            if state["done"]:
                return
            if not state["started"]:
                log.exception("unhandled error on %s", scope.get("path"))
                await _send_json(send, 500, "InternalError", "internal error in the service; see its log")
                return
            raise


async def _send_json(send: Callable, status: int, error: str, detail: str) -> None:
    body = json.dumps({"error": error, "detail": detail, "agent": "", "node": None}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


__all__ = ["DEFAULT_MAX_BODY_BYTES", "Guard", "create_agent_app", "create_all_app", "status_of"]
