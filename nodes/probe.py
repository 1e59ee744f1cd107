"""A fractal sub-probe: resonate one probe's vector and merge what it wakes into the field."""

from __future__ import annotations

from langgraph.runtime import Runtime
from typing_extensions import TypedDict

from nodes.resonate import resonance, top_recalled
from nodes.resources import emit, memory, settings, unit
from state.context import Context
from state.models import Probe

DEPTH_DECAY = 0.95  # a scene reached only through a probe counts a little less than a direct hit


class ProbeTask(TypedDict):
    """What `Send` hands to one probe branch."""

    probe: Probe


def probe(task: ProbeTask, runtime: Runtime[Context]) -> dict:
    """Resonate one probe; scores decay with depth so direct evidence keeps its lead."""
    ctx = settings(runtime)
    p = task["probe"] if isinstance(task["probe"], Probe) else Probe.model_validate(task["probe"])
    keys = [p.target] if p.target else []
    woken = resonance(memory(ctx), ctx, unit(p.vector), keys, via=p.id, depth=p.depth)
    decay = DEPTH_DECAY ** p.depth
    woken = {sid: r.model_copy(update={"score": round(r.score * decay, 6)}) for sid, r in woken.items()}
    emit(runtime, {"event": "woke", "depth": p.depth, "probe": p.id,
                   "scenes": [r.id for r in top_recalled(woken, ctx.top_k)]})
    covered = sorted({k for r in woken.values() if r.score >= ctx.wake_threshold for k in r.keys})
    return {"active": woken, "retrievals": 1, "covered": covered}
