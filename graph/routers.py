"""Routers: pure functions of the state that choose the next edge."""

from __future__ import annotations

from typing import Literal

from langgraph.runtime import Runtime
from langgraph.types import Send

from state.context import Context
from state.thinking import ThinkingState


def after_expand(state: ThinkingState, runtime: Runtime[Context] | None = None) -> list[Send] | Literal[
        "review", "formulate"]:
    """Fan out into the probes the last expansion spawned (each once); when there are none, go on to
    formulate, through review when a person reviews the field (`Context.review`)."""
    pending = set(state.pending)
    sends, seen = [], set()
    for p in state.probes:
        if p.id in pending and p.id not in seen:
            seen.add(p.id)
            sends.append(Send("probe", {"probes": [p]}))
    if sends:
        return sends
    ctx = getattr(runtime, "context", None)
    return "review" if isinstance(ctx, Context) and ctx.review else "formulate"
