"""Wiring only: the thinking graph from its nodes and routers."""

from __future__ import annotations

import copy

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Checkpointer

from adapters.agent_client import AGENT_RETRY, remote_capable
from graph.routers import after_expand
from nodes.build_scene import build_scene
from nodes.crystallize import crystallize
from nodes.decode import decode
from nodes.expand import expand
from nodes.formulate import formulate
from nodes.interpret import interpret
from nodes.probe import ProbeTask, probe
from nodes.resonate import resonate
from nodes.review import review
from state import models
from state.context import Context
from state.thinking import AskInput, AskOutput, ThinkingState

# The project's types that a checkpoint holds: registered with the checkpoint serializer, so that
# reading a thread back neither warns ("Deserializing unregistered type ...") nor breaks once
# LangGraph blocks unregistered types.
STATE_TYPES: tuple[type, ...] = (ThinkingState, AskInput, AskOutput, models.Parse, models.Component,
                                 models.Coupling, models.Scene, models.Recalled, models.Evidence, models.Probe,
                                 models.Formula, models.Crystal)


def registered(checkpointer: Checkpointer) -> Checkpointer:
    """The checkpointer with scenemind's state types on its serializer's msgpack allowlist.

    A saver whose serializer is LangGraph's (or a subclass, such as the one `langgraph dev` builds)
    gets a copy that allows exactly the project's types plus LangGraph's own safe ones; a saver with
    another serializer, or with its own unpack hook, is left as it is.
    """
    if not isinstance(checkpointer, BaseCheckpointSaver):
        return checkpointer
    serde = checkpointer.serde
    if not isinstance(serde, JsonPlusSerializer) or getattr(serde, "_custom_unpack_ext_hook", True):
        return checkpointer
    if getattr(serde, "_scenemind_types", False):
        return checkpointer
    # `with_msgpack_allowlist` ignores additions while the serializer allows everything (the default,
    # with a warning per type), so start it from "LangGraph's safe types only" and add ours.
    strict = copy.copy(serde)
    strict._allowed_msgpack_modules = None
    clone = copy.copy(checkpointer)
    clone.serde = strict.with_msgpack_allowlist([(t.__module__, t.__name__) for t in STATE_TYPES])
    clone.serde._scenemind_types = True
    return clone


class SceneMindGraph(CompiledStateGraph):
    """The compiled graph; every saver it runs with carries the project's types (see `registered`).

    LangGraph applies a graph's allowlist to its saver only in strict mode, and `copy()` (which
    `langgraph dev` calls to attach its own saver) drops it, so the dev server warned on every
    thread read and, with LANGGRAPH_STRICT_MSGPACK=true, blocked the types and broke the run.
    """

    def _apply_checkpointer_allowlist(self, checkpointer):
        return registered(checkpointer)


def compiled(builder: StateGraph, checkpointer: Checkpointer, name: str) -> SceneMindGraph:
    graph = builder.compile(checkpointer=registered(checkpointer), name=name)
    graph.__class__ = SceneMindGraph  # same object and fields, one overridden hook (copy() keeps the class)
    return graph


def build_graph(checkpointer: Checkpointer = None, retrieval_only: bool = False):
    """START → interpret → build_scene → resonate → expand ⇄ probe… → [review] → formulate → decode → crystallize → END.

    Callers give `AskInput` (the question) and get `AskOutput` (answer, evidence, citations, probes,
    formulas, crystals, retrievals); the nodes share the wider `ThinkingState`.
    `retrieval_only` ends the run where the field has settled (after the last expansion):
    what the multi-hop evaluation measures, with nothing written back to memory.
    """
    # The evaluation's retrieval-only graph returns the whole state: it ranks the field (`active`).
    builder = StateGraph(ThinkingState, input_schema=AskInput, output_schema=ThinkingState if retrieval_only else
                         AskOutput, context_schema=Context)

    def add(name: str, fn, **kwargs) -> None:
        # Any node may run in an agent service (Context.agents); the retry policy matches only
        # agent connection errors and 5xx, so in-process nodes never retry.
        builder.add_node(name, remote_capable(name, fn), retry_policy=AGENT_RETRY, **kwargs)

    add("interpret", interpret)
    add("build_scene", build_scene)
    add("resonate", resonate)
    add("expand", expand)
    add("probe", probe, input_schema=ProbeTask)
    builder.add_edge(START, "interpret")
    builder.add_edge("interpret", "build_scene")
    builder.add_edge("build_scene", "resonate")
    builder.add_edge("resonate", "expand")
    builder.add_edge("probe", "expand")  # every probe of a depth finishes before the next expansion
    if retrieval_only:
        builder.add_conditional_edges("expand", after_expand, {"probe": "probe", "review": END, "formulate": END})
        return compiled(builder, checkpointer, "scenemind-retrieval")
    add("review", review)
    add("formulate", formulate)
    add("decode", decode)
    add("crystallize", crystallize)
    builder.add_conditional_edges("expand", after_expand, ["probe", "review", "formulate"])
    builder.add_edge("review", "formulate")
    builder.add_edge("formulate", "decode")
    builder.add_edge("decode", "crystallize")
    builder.add_edge("crystallize", END)
    return compiled(builder, checkpointer, "scenemind")

