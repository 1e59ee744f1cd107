"""Formulator: compress linked active scenes into formulas (written back to memory when `write_back`).

Scenes of the final field that share a rare entity are linked; each connected
chain becomes a formula: the chain of couplings, an extractive summary (the
clause of each scene that carries the link) and a score-weighted vector.
"""

from __future__ import annotations

import math

import numpy as np
from langgraph.runtime import Runtime

from adapters.citations import formula_id
from adapters.lexicon import extract_entities, norm, split_clauses
from nodes.resonate import top_recalled
from nodes.resources import emit, memory, settings, unit
from state.context import Context
from state.models import Coupling, Formula, Recalled
from state.thinking import ThinkingState


def link_scenes(scenes: list[Recalled], keys: dict[str, list[str]], rarity: dict[str, float]) -> list[Coupling]:
    """Scene-to-scene couplings through the rarest entity they share."""
    links = []
    for n, a in enumerate(scenes):
        for b in scenes[n + 1 :]:
            shared = [k for k in set(keys.get(a.id, [])) & set(keys.get(b.id, [])) if k in rarity]
            if shared:
                best = max(shared, key=lambda k: rarity[k])
                links.append(Coupling(source=a.id, target=b.id, relation=best, weight=round(rarity[best], 4)))
    return links


def chains(scenes: list[Recalled], links: list[Coupling]) -> list[list[str]]:
    """Connected groups of linked scenes, each ordered strongest-first by breadth-first walk."""
    adjacent: dict[str, list[str]] = {s.id: [] for s in scenes}
    for link in sorted(links, key=lambda c: -c.weight):
        adjacent[link.source].append(link.target)
        adjacent[link.target].append(link.source)
    seen: set[str] = set()
    out = []
    for s in scenes:  # scenes arrive strongest first
        if s.id in seen or not adjacent[s.id]:
            continue
        chain, queue = [], [s.id]
        seen.add(s.id)
        while queue:
            sid = queue.pop(0)
            chain.append(sid)
            for nxt in adjacent[sid]:
                if nxt not in seen:
                    seen.add(nxt)
                    queue.append(nxt)
        out.append(chain)
    return out


def summarise(chain: list[str], links: list[Coupling], texts: dict[str, str]) -> str:
    """For each scene, the first clause that mentions a key linking it into the chain."""
    parts = []
    for sid in chain:
        keys = {c.relation for c in links if sid in (c.source, c.target)}
        clauses = split_clauses(texts[sid]) or [texts[sid]]
        pick = next((c for c in clauses if keys & {norm(e) for e in extract_entities(c)}), clauses[0])
        parts.append(pick)
    return " → ".join(parts)


def formulate(state: ThinkingState, runtime: Runtime[Context]) -> dict:
    """Link the final field's scenes into formulas and store them, marked as formulas."""
    ctx = settings(runtime)
    mem = memory(ctx)
    top = top_recalled(state.active, ctx.top_k)
    with mem.couplings.reading() as graph:
        keys = {s.id: graph.entities_of(graph.position[s.id]) for s in top if s.id in graph.position}
        log_n = math.log(max(graph.n, 2))
        rarity = {e: graph.idf(e) / log_n for ks in keys.values() for e in ks
                  if 1 < graph.df(e) <= ctx.max_key_scenes}
    links = link_scenes(top, keys, rarity)
    texts = {s.id: s.text for s in top}
    score = {s.id: s.score for s in top}
    formulas = []
    for chain in chains(top, links):
        in_chain = [c for c in links if c.source in chain and c.target in chain]
        formulas.append(Formula(
            id=formula_id(chain),
            chain=chain, links=in_chain, summary=summarise(chain, in_chain, texts),
        ))
    if formulas and ctx.write_back:  # asking is read-only unless the run writes back (chat does)
        # The vector is the chain's score-weighted scenes; it goes to the store, never into the state.
        stored = mem.scenes([s.id for s in top])
        vectors = np.array([unit(sum(score[sid] * stored[sid].vector for sid in f.chain if sid in stored))
                            for f in formulas])
        mem.store.upsert([f.id for f in formulas], vectors, [f.summary for f in formulas],
                         [{"kind": "formula", "chain": f.chain} for f in formulas], kind="formulas")
    titles = {s.id: s.title for s in top}
    emit(runtime, {"event": "formulas", "formulas": [
        {"id": f.id, "chain": [{"id": sid, "title": titles.get(sid)} for sid in f.chain],
         "via": [c.relation for c in f.links]} for f in formulas]})
    return {"formulas": formulas}
