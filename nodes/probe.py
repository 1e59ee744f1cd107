"""A fractal sub-probe: resonate one probe and merge what it wakes into the field."""

from __future__ import annotations

import numpy as np
from langgraph.runtime import Runtime
from typing_extensions import TypedDict

from adapters.memory import Memory
from nodes.resonate import resonance, top_recalled
from nodes.resources import emit, memory, query_vectors, settings, unit
from state.context import Context
from state.models import Probe


class ProbeTask(TypedDict):
    """What `Send` hands to one probe branch: a one-item list under a key the state already has, so the
    probe's input adds no stray channel to the graph's state schema."""

    probes: list[Probe]


def residual(field: np.ndarray, explained: list[np.ndarray]) -> np.ndarray:
    """The part of the field orthogonal to the span of the explaining vectors."""
    rest = field.astype(np.float64).copy()
    basis: list[np.ndarray] = []
    for v in explained:
        v = v.astype(np.float64) - sum(np.dot(v, b) * b for b in basis)
        norm_v = np.linalg.norm(v)
        if norm_v > 1e-6:
            basis.append(v / norm_v)
    for b in basis:
        rest -= np.dot(rest, b) * b
    return rest


def probe_vector(mem: Memory, ctx: Context, p: Probe) -> np.ndarray:
    """A probe's vector, rebuilt from what the probe holds (the state carries no vectors).

    bridge, text mode: "question + bridge" embedded as a query (cached: expand embedded the step in one batch);
    bridge, compose mode: the question's vector plus the bridge entity's; residual: the question's vector
    after projecting out its parent scenes (`parent` lists them, comma-separated).
    """
    if p.vector:
        return unit(p.vector)
    if p.reason == "residual":
        stored = mem.scenes((p.parent or "").split(","))
        return unit(residual(unit(query_vectors(mem, [p.text])[0]), [s.vector for s in stored.values()]))
    if ctx.probe_vectors == "compose" and p.target and p.text.endswith(p.target):
        question = p.text[: -len(p.target)].rstrip()
        return unit(unit(query_vectors(mem, [question])[0]) + mem.entity_vectors([p.target])[0])
    return unit(query_vectors(mem, [p.text])[0])


def one_probe(task: ProbeTask | dict) -> Probe:
    """The probe a branch resonates (an agent service hands it as `probe`)."""
    item = task["probes"][0] if task.get("probes") else task["probe"]
    return item if isinstance(item, Probe) else Probe.model_validate(item)


def probe(task: ProbeTask, runtime: Runtime[Context]) -> dict:
    """Resonate one probe; its scores carry the parent's discount and merge with the field by max."""
    ctx = settings(runtime)
    mem = memory(ctx)
    p = one_probe(task)
    woken = resonance(mem, ctx, probe_vector(mem, ctx, p), p.text, p.entities, via=p.id, depth=p.depth,
                      offset=p.offset, epoch=p.epoch)
    emit(runtime, {"event": "woke", "depth": p.depth, "probe": p.id, "target": p.target,
                   "scenes": [{"id": r.id, "title": r.title, "score": round(r.score, 2)}
                              for r in top_recalled(woken, ctx.top_k)]})
    return {"active": woken}
