"""A fractal sub-probe: resonate one probe's vector and merge what it wakes into the field."""

from __future__ import annotations

from langgraph.runtime import Runtime
from typing_extensions import TypedDict

from nodes.resonate import resonance, top_recalled
from nodes.resources import emit, memory, settings, unit
from state.context import Context
from state.models import Probe


class ProbeTask(TypedDict):
    """What `Send` hands to one probe branch."""

    probe: Probe


def probe(task: ProbeTask, runtime: Runtime[Context]) -> dict:
    """Resonate one probe; its scores carry the parent's discount and merge with the field by max."""
    ctx = settings(runtime)
    p = task["probe"] if isinstance(task["probe"], Probe) else Probe.model_validate(task["probe"])
    woken = resonance(memory(ctx), ctx, unit(p.vector), p.text, p.entities, via=p.id, depth=p.depth,
                      offset=p.offset)
    emit(runtime, {"event": "woke", "depth": p.depth, "probe": p.id,
                   "scenes": [r.id for r in top_recalled(woken, ctx.top_k)]})
    return {"active": woken, "retrievals": 1}
