"""`scenemind serve AGENT`: run agents of scenemind as HTTP services (FastAPI on uvicorn).

    scenemind --data-dir DIR serve resonator --port 8103
    scenemind --data-dir DIR serve all                   # every agent in one process, each under /{agent}

Each service runs the very node functions the in-process graph runs, against
its own Memory, so a graph that calls them (Context.agents) gives the same
answer. Loopback by default; any other address needs SCENEMIND_TOKEN.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
import sys
from collections.abc import Callable, Iterator
from typing import Any

from adapters.agent_client import TOKEN_ENV, embedder_tag
from adapters.agent_protocol import AGENT_NODES, EmbedderTag
from state.context import Context
from state.errors import InputTooLarge, SettingsError

DEFAULT_PORTS = {"all": 8100, "interpreter": 8101, "scene-former": 8102, "resonator": 8103, "formulator": 8104,
                 "decoder": 8105, "archetype-guide": 8106}
OPENAI_MODEL_NAME = "scenemind"
# A token guards a service on the network: 32 random URL-safe characters are ~190 bits (`scenemind token` gives 43).
MIN_TOKEN_CHARS = 32
MIN_TOKEN_DISTINCT = 10  # "aaaa…" or "abab…" is long, not random


def node_functions() -> dict[str, Callable[..., dict]]:
    """The plain node functions (never the remote-capable wrappers: a service must not forward)."""
    from nodes.build_scene import build_scene
    from nodes.crystallize import crystallize
    from nodes.decode import decode
    from nodes.expand import expand
    from nodes.formulate import formulate
    from nodes.interpret import interpret
    from nodes.probe import probe
    from nodes.resonate import resonate

    return {"interpret": interpret, "build_scene": build_scene, "resonate": resonate, "expand": expand,
            "probe": probe, "formulate": formulate, "decode": decode, "crystallize": crystallize}


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve to anything


def check_exposure(host: str, token: str) -> None:
    """Loopback needs nothing; any other address needs a strong token, or the service does not start."""
    if is_loopback(host):
        return
    if not token:
        raise SettingsError(f"refusing to serve on {host} without a token: set {TOKEN_ENV} to a long random "
                            f"secret (`export {TOKEN_ENV}=$(scenemind token)`; clients send it as "
                            "`Authorization: Bearer ...`), or bind 127.0.0.1")
    if len(token) < MIN_TOKEN_CHARS or len(set(token)) < MIN_TOKEN_DISTINCT:
        raise SettingsError(f"refusing to serve on {host} with a weak {TOKEN_ENV} ({len(token)} characters, "
                            f"{len(set(token))} distinct): use at least {MIN_TOKEN_CHARS} random characters, "
                            f"e.g. `export {TOKEN_ENV}=$(scenemind token)`")


def thinking_chat(ctx: Context):
    """A LangChain chat model that answers the last user message by thinking through scenes.

    It backs the decoder's OpenAI-compatible endpoint: the question runs through the whole graph
    in this process (decode alone needs a field, which a chat message does not carry).
    """
    from langchain_core.language_models.chat_models import BaseChatModel
    from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage
    from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult

    from graph.builder import build_graph

    graph = build_graph()

    class ThinkingChat(BaseChatModel):
        context: Any

        @property
        def _llm_type(self) -> str:
            return "scenemind"

        def _question(self, messages: list[BaseMessage]) -> str:
            asked = [m for m in messages if isinstance(m, HumanMessage)]
            text = asked[-1].content if asked else ""
            return text if isinstance(text, str) else str(text)

        def _pieces(self, messages: list[BaseMessage]) -> Iterator[str]:
            question = self._question(messages)
            if len(question) > self.context.max_input_chars:
                raise InputTooLarge(f"the question is {len(question):,} characters, over the limit of "
                                    f"{self.context.max_input_chars:,}")
            spoke, answer, evidence = False, "", []
            for mode, chunk in graph.stream({"question": question}, context=self.context,
                                            stream_mode=["messages", "values"]):
                if mode == "messages":  # a model decoder's tokens, as it generates them
                    token, meta = chunk
                    if meta.get("langgraph_node") == "decode" and token.content:
                        spoke = True
                        yield token.content
                else:
                    answer, evidence = chunk.get("answer", answer), chunk.get("evidence", evidence)
            if not spoke:  # the extractive decoder has no tokens: stream its answer and evidence word by word
                from graph.cli import format_answer

                yield from (p for p in re.split(r"(?<=\s)", format_answer(answer, evidence)) if p)

        def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None, run_manager: Any = None,
                      **kwargs: Any) -> ChatResult:
            return ChatResult(generations=[ChatGeneration(message=AIMessage("".join(self._pieces(messages))))])

        def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None, run_manager: Any = None,
                    **kwargs: Any) -> Iterator[ChatGenerationChunk]:
            for piece in self._pieces(messages):
                yield ChatGenerationChunk(message=AIMessageChunk(content=piece))

    return ThinkingChat(context=ctx)


def build_app(agent: str, ctx: Context, token: str = "", max_body_bytes: int | None = None):
    """The ASGI app for one agent or `all`, guarded; opens the store and embedder first."""
    from adapters.agent_service import DEFAULT_MAX_BODY_BYTES, Guard, create_agent_app, create_all_app
    from nodes.resources import memory

    names = list(AGENT_NODES) if agent == "all" else [agent]
    functions = node_functions()
    if names == ["interpreter"]:  # parsing needs neither the store nor the model, only the space's name
        tag, store = EmbedderTag(**embedder_tag(ctx.embedder)), "none"
    else:
        mem = memory(ctx)  # fails here, in one line, when the store is missing or built by another embedder
        tag = EmbedderTag(name=mem.embedder.name, dim=mem.embedder.dim)
        store = "server" if ctx.store_url else "embedded"
    apps = {}
    for name in names:
        extra = None
        if name == "decoder":  # the decoder also speaks OpenAI chat completions (README: "Agents as services")
            from adapters.openai_server import create_app as openai_app

            extra = openai_app(thinking_chat(ctx), OPENAI_MODEL_NAME)
        forget = None
        if name == "resonator":  # the agent that reads memory also forgets from it (DELETE /v1/scenes)
            def forget(sources: list[str], scene_ids: list[str]) -> dict[str, Any]:
                from dataclasses import asdict

                from graph.store_cli import source_names

                return asdict(memory(ctx).forget(source=source_names(sources), scene_ids=scene_ids))
        apps[name] = create_agent_app(name, {n: functions[n] for n in AGENT_NODES[name]}, ctx, tag, store, extra,
                                      forget=forget)
    app = apps[agent] if agent != "all" else create_all_app(apps)
    return Guard(app, token=token, max_body_bytes=max_body_bytes or DEFAULT_MAX_BODY_BYTES)


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from graph.cli import _context

    token = os.environ.get(TOKEN_ENV, "")
    check_exposure(args.host, token)  # before any model loads
    ctx = _context(args)
    port = args.port or DEFAULT_PORTS[args.agent]
    max_body = args.max_body_bytes or int(os.environ.get("SCENEMIND_MAX_BODY_BYTES", "0") or 0) or None
    app = build_app(args.agent, ctx, token=token, max_body_bytes=max_body)
    print(f"scenemind serve {args.agent}: http://{args.host}:{port} (store {ctx.store_url or ctx.data_dir}, "
          f"token {'required' if token else 'off'})", file=sys.stderr, flush=True)
    uvicorn.run(app, host=args.host, port=port, log_level=args.log_level, timeout_keep_alive=30,
                backlog=1024)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    serve = sub.add_parser("serve", help="run an agent (or all of them) as an HTTP service",
                           description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    serve.add_argument("agent", choices=[*AGENT_NODES, "all"])
    serve.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1; others need "
                                                            f"{TOKEN_ENV})")
    serve.add_argument("--port", type=int, help="port (default: all 8100, interpreter 8101 ... archetype-guide 8106)")
    serve.add_argument("--max-body-bytes", type=int, dest="max_body_bytes",
                       help="largest request body accepted (default 4 MiB; env SCENEMIND_MAX_BODY_BYTES)")
    serve.add_argument("--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"])
    serve.set_defaults(func=cmd_serve)
