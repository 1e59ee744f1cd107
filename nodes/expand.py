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
import re

from langgraph.runtime import Runtime

from adapters.coupling_index import CouplingGraph
from adapters.lexicon import norm
from adapters.question_form import form_of
from adapters.memory import Memory
from nodes.probe import residual  # noqa: F401  (re-exported: the residual probe's geometry)
from nodes.resonate import top_recalled
from nodes.resources import emit, memory, query_vectors, settings
from state.context import Context
from state.models import Probe, Recalled
from state.thinking import ThinkingState, epoch_of


def stop_reason(new: list[Recalled], depth: int, retrievals: int, ctx: Context) -> str | None:
    """Why expansion ends here, or None to go on."""
    if not new:
        return "fixed point: no new scene entered the top of the field"
    if depth >= ctx.max_depth:
        return f"max depth {ctx.max_depth} reached"
    if retrievals >= ctx.retrieval_budget:
        return f"retrieval budget {ctx.retrieval_budget} spent"
    return None


# Dates and demonyms ("september 8", "polish") are named by many scenes that share nothing else: as
# bridges they rarely lead to the next hop, so they come after every name unless the question asks for one.
_MONTH = re.compile(r"\b(?:january|february|march|april|may|june|july|august|september|october|november|"
                    r"december|январ\w*|феврал\w*|март\w*|апрел\w*|ма[йя]|июн\w*|июл\w*|август\w*|"
                    r"сентябр\w*|октябр\w*|ноябр\w*|декабр\w*)\b")
_DEMONYM = re.compile(r"^[a-zа-яё]+(?:an|ian|ese|ish|ic|i|ch|ский|ская|ское|ские|цкий)$")
_NATIONALITY_WORDS = {"nationality", "citizen", "citizenship", "ethnicity", "language", "национальность",
                      "национальности", "гражданство", "гражданства", "язык", "языке"}


def bridge_kind(graph: CouplingGraph, entity: str) -> str:
    """date | demonym | name: dates hold a month and a number or are a decade; a demonym is one word with a
    demonym ending that titles no scene (a scene titled "Polish" is a name)."""
    if any(c.isdigit() for c in entity) and (_MONTH.search(entity) or re.fullmatch(r"\d{3,4}s", entity)):
        return "date"
    if " " not in entity and _DEMONYM.match(entity) and entity not in graph.title_index:
        return "demonym"
    return "name"


def asked_kinds(question: str) -> set[str]:
    """The kinds of bridge the question asks for (a date, a nationality), besides names."""
    form = form_of(question)
    kinds = {"name"}
    if form.kind == "date" or form.attribute == "date":
        kinds.add("date")
    if form.attribute == "nationality" or _NATIONALITY_WORDS & set(re.findall(r"\w+", question.lower())):
        kinds.add("demonym")
    return kinds


def bridges(graph: CouplingGraph, scene_id: str, question: str, known: set[str], limit: int) -> list[str]:
    """Entities of a scene that the question does not hold, rarest first among those that lead somewhere;
    dates and demonyms after every name unless the question asks for them."""
    pos = graph.position.get(scene_id)
    if pos is None:
        return []
    asked, kinds = norm(question), asked_kinds(question)
    names = [e for e in graph.entities_of(pos) if e not in known and e not in asked and not e.isdigit()]
    # Names first; a date or demonym the question does not ask for only fills a slot no name takes.
    return sorted(names, key=lambda e: (bridge_kind(graph, e) not in kinds,
                                        -graph.idf(e) if graph.df(e) > 1 else 0.0))[:limit]


def _probe_id(text: str, depth: int) -> str:
    return f"p{depth}-" + hashlib.sha256(text.encode()).hexdigest()[:10]


def plan_probes(state: ThinkingState, mem: Memory, ctx: Context, limit: int) -> list[Probe]:
    """Bridge probes from the strongest scenes not yet expanded (and the residual, when enabled).

    One bridge entity reached from two parents is one probe (the stronger parent's): the same text
    would be the same probe id and cost a second retrieval for nothing.
    """
    assert state.scene is not None
    with mem.couplings.reading() as graph:
        question, depth = state.scene.text, state.depth + 1
        entities = graph.query_entities(question)
        ranked = top_recalled(state.active, len(state.active))
        top_score = ranked[0].score
        expanded = {p.parent for p in state.probes}
        parents = [r for r in ranked if r.id not in expanded][: ctx.bridge_parents]
        known = set(entities) | set(state.covered)
        epoch = epoch_of(state.active)
        probes: list[Probe] = []
        for parent in parents:
            for entity in bridges(graph, parent.id, question, known, ctx.bridges_per_scene):
                known.add(entity)
                text = f"{question} {entity}"
                probes.append(Probe(id=_probe_id(text, depth), text=text, depth=depth, reason="bridge",
                                    target=entity, parent=parent.id, entities={**entities, entity: graph.idf(entity)},
                                    offset=ctx.chain_weight * (parent.score - top_score), epoch=epoch))
    probes = probes[:limit]
    if probes and ctx.probe_vectors == "text":
        query_vectors(mem, [p.text for p in probes])  # one batch for the whole step; the probes read the cache
    if ctx.residual_probes and len(probes) < limit and parents:
        ids = ",".join(r.id for r in parents)
        probes.append(Probe(id=_probe_id(f"residual {ids} {question}", depth), text=question, depth=depth,
                            reason="residual", parent=ids, entities=entities, epoch=epoch))
    return probes


def expand(state: ThinkingState, runtime: Runtime[Context]) -> dict:
    """Turn the unresolved delta into probes for the next depth, or stop."""
    ctx = settings(runtime)
    retrievals = 1 + len(state.probes)  # resonate, then one per probe (every spawned probe has run by now)
    top = top_recalled(state.active, ctx.fixed_point_rank)
    new = [r for r in top if r.id not in state.frontier]
    frontier = state.frontier + [r.id for r in new]
    reason = stop_reason(new, state.depth, retrievals, ctx)
    probes = [] if reason else plan_probes(state, memory(ctx), ctx, min(ctx.max_probes, ctx.retrieval_budget - retrievals))
    if not probes:
        emit(runtime, {"event": "resolved", "depth": state.depth, "reason": reason or "no unresolved entity left"})
        return {"pending": [], "frontier": frontier, "retrievals": retrievals}
    titles = {r.id: r.title for r in state.active.values()}
    emit(runtime, {"event": "probes", "depth": state.depth + 1,
                   "probes": [{"id": p.id, "reason": p.reason, "target": p.target, "text": p.text,
                               "parent": p.parent, "parent_title": titles.get(p.parent or "")} for p in probes]})
    return {"probes": state.probes + probes, "pending": [p.id for p in probes], "depth": state.depth + 1,
            "frontier": frontier, "retrievals": retrievals, "covered": state.covered + [p.target for p in probes if p.target]}
