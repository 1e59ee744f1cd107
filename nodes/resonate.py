"""Resonance Engine: wake the scenes in memory that resonate with a field.

1. Seeds: the dense cosine from the store (z-scaled exactly with the stored vector
   moments) plus lexical evidence over the couplings index — BM25, a bonus for a
   scene titled by a query entity, and one per query entity it mentions, by rarity.
2. Spreading: personalised PageRank over scene <-> entity couplings, restarting at
   the strongest seeds and at the query's entities. A scene's final score is its seed
   score + spread_weight * log(1 + n * activation): activation relative to the
   uniform level, so scores of different probes share one scale and merge by max.
3. Crystals that this field recalls lean on the scenes they were formed from.
Only candidates (dense hits, the best lexical and the best spread scenes) are scored.
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
from langgraph.runtime import Runtime

from adapters.coupling_index import CouplingGraph
from adapters.lexicon import terms_of
from adapters.memory import Memory
from nodes.resources import emit, memory, question_vector, settings, unit
from state.context import Context
from state.models import Recalled
from state.thinking import ThinkingState, epoch_of

KEEP = 24  # scenes one resonance hands to the field: enough for recall@10 after merging
LEXICAL_FULL_COVERAGE = 0.5  # same-language questions reach it even with a few words memory lacks


def _z(x: np.ndarray, n: int | None = None) -> np.ndarray:
    """z-scores over the n scenes held: a removed scene's free position holds 0 and must not move the statistics
    (otherwise forgetting scenes would shift every remaining score)."""
    if not len(x):
        return x
    n = n or len(x)
    mean = float(x.sum()) / n
    std = math.sqrt(max(float(x @ x) / n - mean * mean, 0.0))
    return (x - mean) / (std + 1e-9)


def _top(scores: np.ndarray, k: int) -> list[int]:
    if k <= 0 or not len(scores):
        return []
    k = min(k, len(scores))
    idx = np.argpartition(-scores, k - 1)[:k]
    return [int(i) for i in idx[np.argsort(-scores[idx])] if scores[i] > 0]


def resonance(mem: Memory, ctx: Context, vector: np.ndarray, text: str, entities: dict[str, float],
              via: str = "question", depth: int = 0, offset: float = 0.0, epoch: int = 0) -> dict[str, Recalled]:
    """Scenes woken by one field (one store query), scored seed + spread (+ crystal bias) + offset."""
    # The graph stays still while this resonance reads it (another thread may catch it up meanwhile).
    with mem.couplings.reading() as graph:
        cosine = dict(mem.store.nearest_ids(vector, ctx.dense_k))
        mean, std = graph.dense_moments(vector)
        terms = terms_of(text)
        trust = lexical_trust(graph, terms)
        entities = {e: w * trust for e, w in entities.items()} if trust < 1.0 else entities
        lexical = np.zeros(graph.size)  # per position (a removed scene leaves a free one)
        if ctx.bm25_weight:
            lexical += ctx.bm25_weight * _z(graph.bm25(terms), graph.n)
        if ctx.title_weight or ctx.mention_weight:
            lexical += graph.entity_bonus(entities, ctx.title_weight, ctx.mention_weight)
        lexical *= trust
        _add_cosines(mem, [graph.ids[p] for p in _top(lexical, ctx.lexical_k)], cosine, vector)  # none when all 0

        def seed(sid: str) -> float:
            pos = graph.position.get(sid)  # a scene the index has not caught up with has no lexical evidence
            return (cosine[sid] - mean) / std + (lexical[pos] if pos is not None else 0.0)

        score = {sid: seed(sid) for sid in cosine}
        if ctx.spread_weight and score and graph.n:
            strongest = sorted(score, key=score.get, reverse=True)[: ctx.spread_seeds]
            top = score[strongest[0]]
            seeds = {graph.position[s]: float(np.exp(score[s] - top)) for s in strongest if s in graph.position}
            if ctx.spread_floor > 0:
                # Only the seeds' neighbourhood: activation (a share of the seeds' mass) under spread_floor is dropped
                # at each step, so at most 1 / spread_floor scenes hold activation whatever memory's size.
                where, activation = graph.spread_near(seeds, entities, ctx.spread_restart, ctx.spread_iterations,
                                                      floor=ctx.spread_floor)
            else:
                activation = graph.spread(seeds, entities, ctx.spread_restart, ctx.spread_iterations)
                where = np.arange(len(activation))
            boost = ctx.spread_weight * np.log1p(activation * graph.n)  # `where` is sorted
            _add_cosines(mem, [graph.ids[where[i]] for i in _top(boost, ctx.lexical_k)], cosine, vector)

            def boost_of(sid: str) -> float:
                pos = graph.position.get(sid, -1)
                at = int(np.searchsorted(where, pos))
                return float(boost[at]) if at < len(where) and where[at] == pos else 0.0

            score = {sid: (score[sid] if sid in score else seed(sid)) + boost_of(sid) for sid in cosine}
        for sid, bias in crystal_bias(mem, ctx, vector).items():
            if sid in score:
                score[sid] += bias
        best = sorted(score, key=score.get, reverse=True)[:KEEP]
        kept = mem.scenes(best)
        return {sid: Recalled(id=sid, text=kept[sid].text, title=kept[sid].title, dense=round(cosine[sid], 6),
                              score=round(score[sid] + offset, 6), via=via, depth=depth, epoch=epoch)
                for sid in best if sid in kept}


def lexical_trust(graph: CouplingGraph, terms: list[str]) -> float:
    """How far the query's words are memory's words: the IDF-weighted share of its terms the index
    knows, full trust from LEXICAL_FULL_COVERAGE up.

    A question in another language than the memory shares only numbers and a few names with
    it; BM25 and entity matches resting on those few words would drown the cross-lingual
    dense evidence, so they count in proportion.
    """
    unique = set(terms)
    if not unique or not graph.n:
        return 1.0
    unseen = math.log(1 + (graph.n + 0.5) / 0.5)  # a term in no scene has the highest IDF
    known = sum(float(graph.term_idf[graph.term_id[t]]) for t in unique if t in graph.term_id)
    total = known + unseen * sum(1 for t in unique if t not in graph.term_id)
    return min(1.0, known / total / LEXICAL_FULL_COVERAGE) if total > 0 else 1.0


def _add_cosines(mem: Memory, ids: list[str], cosine: dict[str, float], vector: np.ndarray) -> None:
    """Cosine to the field of candidates the dense search did not return (vectors from the scene cache)."""
    for sid, scene in mem.scenes([sid for sid in ids if sid not in cosine]).items():
        cosine[sid] = float(np.dot(scene.vector, vector))


def crystal_bias(mem: Memory, ctx: Context, vector: np.ndarray) -> dict[str, float]:
    """Scenes of crystals that this field recalls get a bias proportional to strength and cosine."""
    bias: dict[str, float] = defaultdict(float)
    if not ctx.crystal_weight:
        return {}
    for _, cos, _, meta in mem.store.nearest(vector[None, :], 3, kind="crystals")[0]:
        if cos < ctx.crystal_threshold:
            continue
        strength = float(meta.get("strength", 1.0))
        for sid in meta.get("scene_ids", []):
            bias[sid] = max(bias[sid], ctx.crystal_weight * min(strength, 3.0) / 3.0 * cos)
    return dict(bias)


def top_recalled(active: dict[str, Recalled], k: int) -> list[Recalled]:
    return sorted(active.values(), key=lambda r: r.score, reverse=True)[:k]


def resonate(state: ThinkingState, runtime: Runtime[Context]) -> dict:
    """Wake the scenes that resonate with the question's scene."""
    ctx = settings(runtime)
    assert state.scene is not None, "build_scene runs before resonate"
    mem = memory(ctx)
    with mem.couplings.reading() as graph:
        entities = graph.query_entities(state.scene.text)
    woken = resonance(mem, ctx, question_vector(mem, state.scene), state.scene.text, entities,
                      epoch=epoch_of(state.active))
    emit(runtime, {"event": "woke", "depth": 0, "entities": sorted(entities),
                   "scenes": [{"id": r.id, "title": r.title, "score": round(r.score, 2)}
                              for r in top_recalled(woken, ctx.top_k)]})
    return {"active": woken, "retrievals": 1}
