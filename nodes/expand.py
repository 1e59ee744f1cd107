"""DeltaManager: measure what is still unresolved and spawn fractal sub-probes.

Three kinds of delta become probes: query entities no woken scene covers,
bridge entities that the newly woken scenes introduce, and the residual of the
field after projecting out what the woken scenes explain. Expansion stops at a
fixed point (nothing new woke), at max_depth, or when the retrieval budget is spent.
"""

from __future__ import annotations

import hashlib

import numpy as np
from langgraph.runtime import Runtime

from adapters.memory import Memory
from nodes.resonate import top_recalled
from nodes.resources import emit, memory, settings, unit
from state.context import Context
from state.models import Probe, Recalled
from state.thinking import ThinkingState

BRIDGES_PER_SCENE = 1
RESIDUAL_MIN_NORM = 0.35  # below this the woken scenes already explain the field


def stop_reason(new: list[Recalled], depth: int, retrievals: int, ctx: Context) -> str | None:
    """Why expansion ends here, or None to go on."""
    if not new:
        return "fixed point: no new scene woke"
    if depth >= ctx.max_depth:
        return f"max depth {ctx.max_depth} reached"
    if retrievals >= ctx.retrieval_budget:
        return f"retrieval budget {ctx.retrieval_budget} spent"
    return None


def residual(field: np.ndarray, explained: list[np.ndarray]) -> np.ndarray:
    """The part of the field orthogonal to the span of the explaining vectors."""
    rest = field.astype(np.float64).copy()
    basis: list[np.ndarray] = []
    for v in explained:
        v = v.astype(np.float64) - sum(np.dot(v, b) * b for b in basis)
        norm = np.linalg.norm(v)
        if norm > 1e-6:
            basis.append(v / norm)
    for b in basis:
        rest -= np.dot(rest, b) * b
    return rest


def _probe_id(text: str, depth: int) -> str:
    return f"p{depth}-" + hashlib.sha256(text.encode()).hexdigest()[:10]


def plan_probes(state: ThinkingState, new: list[Recalled], mem: Memory, ctx: Context, limit: int) -> list[Probe]:
    """Unresolved query entities first, then bridges from new scenes, then the residual."""
    assert state.scene is not None
    depth = state.depth + 1
    question = state.scene.text
    query_keys = set(state.scene.keys)
    planned: list[tuple[str, str, str | None, str | None]] = []  # (text, reason, target, parent)
    for comp in state.scene.components:
        if comp.kind == "entity" and comp.key not in state.covered:
            planned.append((comp.text, "uncovered", comp.key, None))
    rarity_of = mem.couplings.rarity
    for scene in new:
        keys = [k for k in mem.couplings.keys_of([scene.id]).get(scene.id, [])
                if k.startswith("e:") and k not in query_keys and k not in state.covered]
        df = mem.couplings.document_frequency(keys)
        shared = [k for k in keys if 2 <= df[k] <= ctx.max_key_scenes]  # a bridge must lead somewhere
        rarity = rarity_of(shared)
        for key in sorted(shared, key=lambda k: -rarity[k])[:BRIDGES_PER_SCENE]:
            planned.append((f"{question} {key[2:]}", "bridge", key, scene.id))
    seen: set[str] = {p.text for p in state.probes}
    probes: list[Probe] = []
    for text, reason, target, parent in planned:
        if text in seen or len(probes) >= limit:
            continue
        seen.add(text)
        probes.append(Probe(id=_probe_id(text, depth), text=text, depth=depth, reason=reason,  # type: ignore[arg-type]
                            target=target, parent=parent))
    vectors = mem.embedder.embed([p.text for p in probes])  # one batch for the whole step
    probes = [p.model_copy(update={"vector": v.tolist()}) for p, v in zip(probes, vectors)]
    if len(probes) < limit:
        explained = [np.asarray(v["vector"]) for v in mem.fetch([r.id for r in new]).values()]
        rest = residual(unit(state.field), explained)
        if np.linalg.norm(rest) >= RESIDUAL_MIN_NORM:
            text = f"residual of {question!r} after {len(explained)} scenes"
            probes.append(Probe(id=_probe_id(text, depth), text=text, depth=depth, reason="residual",
                                vector=unit(rest).tolist()))
    return probes


def expand(state: ThinkingState, runtime: Runtime[Context]) -> dict:
    """Turn the unresolved delta into probes for the next depth, or stop."""
    ctx = settings(runtime)
    top = top_recalled(state.active, ctx.top_k)
    new = [r for r in top if r.id not in state.frontier and r.score >= ctx.wake_threshold]
    frontier = state.frontier + [r.id for r in new]
    reason = stop_reason(new, state.depth, state.retrievals, ctx)
    if reason:
        emit(runtime, {"event": "resolved", "depth": state.depth, "reason": reason})
        return {"pending": [], "frontier": frontier}
    limit = min(ctx.max_probes, ctx.retrieval_budget - state.retrievals)
    probes = plan_probes(state, new, memory(ctx), ctx, limit)
    emit(runtime, {"event": "probes", "depth": state.depth + 1,
                   "probes": [{"id": p.id, "reason": p.reason, "text": p.text} for p in probes]})
    return {"probes": probes, "pending": [p.id for p in probes], "depth": state.depth + 1, "frontier": frontier}
