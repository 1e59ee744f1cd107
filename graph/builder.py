"""Wiring only: the thinking graph from its nodes and routers."""

from __future__ import annotations

from langgraph.graph import END, START, StateGraph
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
from state.context import Context
from state.thinking import ThinkingState


def build_graph(checkpointer: Checkpointer = None, retrieval_only: bool = False):
    """START → interpret → build_scene → resonate → expand ⇄ probe… → formulate → decode → crystallize → END.

    `retrieval_only` ends the run where the field has settled (after the last expansion):
    what the multi-hop evaluation measures, with nothing written back to memory.
    """
    builder = StateGraph(ThinkingState, context_schema=Context)

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
        builder.add_conditional_edges("expand", after_expand, {"probe": "probe", "formulate": END})
        return builder.compile(checkpointer=checkpointer, name="scenemind-retrieval")
    add("formulate", formulate)
    add("decode", decode)
    add("crystallize", crystallize)
    builder.add_conditional_edges("expand", after_expand, ["probe", "formulate"])
    builder.add_edge("formulate", "decode")
    builder.add_edge("decode", "crystallize")
    builder.add_edge("crystallize", END)
    return builder.compile(checkpointer=checkpointer, name="scenemind")
