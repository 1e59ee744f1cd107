"""DeltaManager: measure what is still unresolved and spawn fractal sub-probes.

The delta is what the strongest scenes bring that the question does not hold: their
entities the question never names (bridge entities), rarest first among those that
lead somewhere (held by more than one scene). Each becomes a probe — the question plus
the bridge — whose resonance is discounted by its parent's gap to the top scene, so a
chain through a weak first hop counts less. Optionally the residual of the field after
projecting out the top scenes becomes a probe too (it measured worse: off by default).
Expansion stops at a fixed point (no new scene entered the top places), at max_depth,
or when the retrieval budget is spent.
"""

from __future__ import annotations

import hashlib

import numpy as np
from langgraph.runtime import Runtime

from adapters.coupling_index import CouplingGraph
from adapters.lexicon import norm
from adapters.memory import Memory
from nodes.resonate import top_recalled
from nodes.resources import emit, memory, settings, unit
from state.context import Context
from state.models import Probe, Recalled
from state.thinking import ThinkingState


def stop_reason(new: list[Recalled], depth: int, retrievals: int, ctx: Context) -> str | None:
    """Why expansion ends here, or None to go on."""
    if not new:
        return "fixed point: no new scene entered the top of the field"
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
        norm_v = np.linalg.norm(v)
        if norm_v > 1e-6:
            basis.append(v / norm_v)
    for b in basis:
        rest -= np.dot(rest, b) * b
    return rest


def bridges(graph: CouplingGraph, scene_id: str, question: str, known: set[str], limit: int) -> list[str]:
    """Entities of a scene that the question does not hold, rarest first among those that lead somewhere."""
    pos = graph.position.get(scene_id)
    if pos is None:
        return []
    asked = norm(question)
    names = [e for e in graph.entities_of(pos) if e not in known and e not in asked and not e.isdigit()]
    return sorted(names, key=lambda e: -graph.idf(e) if graph.df(e) > 1 else 0.0)[:limit]


def _probe_id(text: str, depth: int) -> str:
    return f"p{depth}-" + hashlib.sha256(text.encode()).hexdigest()[:10]


def plan_probes(state: ThinkingState, mem: Memory, ctx: Context, limit: int) -> list[Probe]:
    """Bridge probes from the strongest scenes not yet expanded (and the residual, when enabled)."""
    assert state.scene is not None
    graph = mem.couplings.graph()
    question, depth = state.scene.text, state.depth + 1
    entities = graph.query_entities(question)
    ranked = top_recalled(state.active, len(state.active))
    top_score = ranked[0].score
    expanded = {p.parent for p in state.probes}
    parents = [r for r in ranked if r.id not in expanded][: ctx.bridge_parents]
    known = set(entities) | set(state.covered)
    probes: list[Probe] = []
    for parent in parents:
        for entity in bridges(graph, parent.id, question, known, ctx.bridges_per_scene):
            text = f"{question} {entity}"
            probes.append(Probe(id=_probe_id(text, depth), text=text, depth=depth, reason="bridge", target=entity,
                                parent=parent.id, entities={**entities, entity: graph.idf(entity)},
                                offset=ctx.chain_weight * (parent.score - top_score)))
    probes = probes[:limit]
    if ctx.probe_vectors == "compose":
        field = unit(state.field)
        vectors = np.array([unit(field + v) for v in mem.entity_vectors([p.target or "" for p in probes])])
    else:
        vectors = mem.embedder.embed([p.text for p in probes], role="query")  # one batch for the whole step
    probes = [p.model_copy(update={"vector": v.tolist()}) for p, v in zip(probes, vectors)]
    if ctx.residual_probes and len(probes) < limit and parents:
        stored = mem.scenes([r.id for r in parents])
        rest = residual(unit(state.field), [stored[r.id].vector for r in parents if r.id in stored])
        text = f"residual of the question after {len(parents)} scenes"
        probes.append(Probe(id=_probe_id(text + question, depth), text=text, depth=depth, reason="residual",
                            entities=entities, vector=unit(rest).tolist()))
    return probes


def expand(state: ThinkingState, runtime: Runtime[Context]) -> dict:
    """Turn the unresolved delta into probes for the next depth, or stop."""
    ctx = settings(runtime)
    top = top_recalled(state.active, ctx.fixed_point_rank)
    new = [r for r in top if r.id not in state.frontier]
    frontier = state.frontier + [r.id for r in new]
    reason = stop_reason(new, state.depth, state.retrievals, ctx)
    probes = [] if reason else plan_probes(state, memory(ctx), ctx,
                                           min(ctx.max_probes, ctx.retrieval_budget - state.retrievals))
    if not probes:
        emit(runtime, {"event": "resolved", "depth": state.depth, "reason": reason or "no unresolved entity left"})
        return {"pending": [], "frontier": frontier}
    emit(runtime, {"event": "probes", "depth": state.depth + 1,
                   "probes": [{"id": p.id, "reason": p.reason, "text": p.text} for p in probes]})
    return {"probes": probes, "pending": [p.id for p in probes], "depth": state.depth + 1, "frontier": frontier,
            "covered": [p.target for p in probes if p.target]}
