"""Routers: pure functions of the state that choose the next edge."""

from __future__ import annotations

from typing import Literal

from langgraph.types import Send

from state.thinking import ThinkingState


def after_expand(state: ThinkingState) -> list[Send] | Literal["formulate"]:
    """Fan out into the probes the last expansion spawned, or go on to formulate when there are none."""
    pending = set(state.pending)
    sends = [Send("probe", {"probe": p}) for p in state.probes if p.id in pending]
    return sends or "formulate"
