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


def _top(scores: np.ndarray, k: int) -> list[int]:
    """Indices of the k highest positive scores, best first; equal scores in index order (so the same scenes win
    whether scores come as an array over every position or over the few that hold evidence)."""
    if k <= 0 or not len(scores):
        return []
    k = min(k, len(scores))
    kth = np.partition(scores, len(scores) - k)[len(scores) - k]
    within = np.flatnonzero(scores >= kth)
    best = within[np.argsort(-scores[within], kind="stable")][:k]
    return [int(i) for i in best if scores[i] > 0]


class Lexical:
    """Lexical evidence per scene position: (BM25 z-scaled over the n scenes held, times its weight, + the entity
    bonus) times trust. Held sparsely: the scenes with a query term or entity, and the value every other scene
    has (BM25 0 sits below the mean). Nothing of memory's size is built, so its cost follows the posting lists
    read, not the scene count."""

    def __init__(self, graph: CouplingGraph, ctx: Context, terms: list[str], entities: dict[str, float],
                 trust: float):
        where, value, rest = np.zeros(0, dtype=np.int64), np.zeros(0), 0.0
        if ctx.bm25_weight:
            where, scores = graph.bm25_at(terms)
            if len(where):
                # Mean and deviation over all n scenes, the n - len(where) without a term scoring 0. Not
                # `scores @ scores`: a long BLAS dot wakes OpenBLAS's thread pool, whose threads then spin and
                # starve the embedder and the probes on a small machine (half a 100k memory's query CPU).
                n = max(graph.n, 1)
                mean = float(scores.sum()) / n
                std = math.sqrt(max(float(np.einsum("i,i->", scores, scores)) / n - mean * mean, 0.0)) + 1e-9
                value, rest = ctx.bm25_weight * ((scores - mean) / std), ctx.bm25_weight * (-mean / std)
        if ctx.title_weight or ctx.mention_weight:
            at, bonus = graph.entity_bonus_at(entities, ctx.title_weight, ctx.mention_weight)
            if len(at):
                union = np.union1d(where, at)
                merged = np.full(len(union), rest)
                merged[np.searchsorted(union, where)] = value
                merged[np.searchsorted(union, at)] += bonus
                where, value = union, merged
        self.where, self.value, self.rest = where, value * trust, rest * trust

    def at(self, pos: int) -> float:
        i = int(np.searchsorted(self.where, pos))
        return float(self.value[i]) if i < len(self.where) and self.where[i] == pos else self.rest

    def best(self, k: int) -> list[int]:
        """Positions of the k strongest scenes with positive evidence (every other scene's is rest <= 0)."""
        return [int(self.where[i]) for i in _top(self.value, k)]


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
        lexical = Lexical(graph, ctx, terms, entities, trust)
        _add_cosines(mem, [graph.ids[p] for p in lexical.best(ctx.lexical_k)], cosine, vector)

        def seed(sid: str) -> float:
            pos = graph.position.get(sid)  # a scene the index has not caught up with has no lexical evidence
            return (cosine[sid] - mean) / std + (lexical.at(pos) if pos is not None else 0.0)

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
