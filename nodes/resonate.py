"""Resonance Engine: wake the scenes in memory that resonate with a field.

Dense search gives the first wave; activation then spreads over couplings —
from the query's own keys and from the strongest dense hits through the rare
keys they share — and crystals lean on the scenes they were formed from.
Scores are cosine-based and comparable across probes, so merging keeps the max.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
from langgraph.runtime import Runtime

from adapters.memory import Memory
from nodes.resources import emit, memory, settings, unit
from state.context import Context
from state.models import Recalled
from state.thinking import ThinkingState

SEEDS = 5  # dense hits that pass activation on to their coupled scenes


def spread_activation(
    seeds: dict[str, float], seed_keys: dict[str, list[str]], query_keys: list[str],
    key_scenes: dict[str, list[str]], rarity: dict[str, float],
) -> dict[str, float]:
    """One bounded step of activation over scene <-> key couplings.

    A scene gains rarity(key) for each query key it holds, and seed * rarity(key) / fan-out
    for each rare key it shares with a seed scene. Returns raw activation per scene id.
    """
    out: dict[str, float] = defaultdict(float)
    for key in query_keys:
        for sid in key_scenes.get(key, []):
            out[sid] += rarity.get(key, 0.0)
    for seed, strength in seeds.items():
        for key in seed_keys.get(seed, []):
            holders = key_scenes.get(key, [])
            for sid in holders:
                if sid != seed:
                    out[sid] += strength * rarity.get(key, 0.0) / len(holders)
    return dict(out)


def resonance(mem: Memory, ctx: Context, vector: np.ndarray, query_keys: list[str],
              via: str = "question", depth: int = 0) -> dict[str, Recalled]:
    """Scenes woken by one field vector (one store query), scored dense + spread + crystal bias."""
    hits = mem.dense(vector[None, :], ctx.dense_k)[0]
    woken = {h.id: h for h in hits}
    seeds = {h.id: h.dense for h in hits[:SEEDS]}
    seed_keys = mem.couplings.keys_of(list(seeds))
    keys = sorted(set(query_keys) | {k for ks in seed_keys.values() for k in ks})
    key_scenes = mem.couplings.scenes_with(keys, ctx.max_key_scenes)
    rarity = mem.couplings.rarity(list(key_scenes))
    spread = spread_activation(seeds, seed_keys, query_keys, key_scenes, rarity)
    top = max(spread.values(), default=0.0)
    newcomers = [sid for sid in sorted(spread, key=spread.get, reverse=True)[: ctx.dense_k] if sid not in woken]
    for sid, item in mem.fetch(newcomers).items():
        cos = float(np.dot(item["vector"], vector))
        woken[sid] = Recalled(id=sid, text=item["text"], title=item["meta"].get("title"), dense=cos, score=cos)
    bias = crystal_bias(mem, ctx, vector)
    out = {}
    for sid, rec in woken.items():
        boost = ctx.spread_weight * (spread.get(sid, 0.0) / top if top else 0.0) + bias.get(sid, 0.0)
        out[sid] = rec.model_copy(update={"score": round(rec.dense + boost, 6), "via": via, "depth": depth,
                                          "keys": [k for k in query_keys if sid in key_scenes.get(k, [])]})
    return out


def crystal_bias(mem: Memory, ctx: Context, vector: np.ndarray) -> dict[str, float]:
    """Scenes of crystals that this field recalls get a bias proportional to strength and cosine."""
    bias: dict[str, float] = defaultdict(float)
    for crystal in mem.dense(vector[None, :], 3, kind="crystals")[0]:
        if crystal.dense < ctx.crystal_threshold:
            continue
        meta = mem.store.get([crystal.id], kind="crystals").get(crystal.id, {}).get("meta", {})
        strength = float(meta.get("strength", 1.0))
        for sid in meta.get("scene_ids", []):
            bias[sid] = max(bias[sid], ctx.crystal_weight * min(strength, 3.0) / 3.0 * crystal.dense)
    return dict(bias)


def top_recalled(active: dict[str, Recalled], k: int) -> list[Recalled]:
    return sorted(active.values(), key=lambda r: r.score, reverse=True)[:k]


def resonate(state: ThinkingState, runtime: Runtime[Context]) -> dict:
    """Wake the scenes that resonate with the question's scene."""
    ctx = settings(runtime)
    assert state.scene is not None, "build_scene runs before resonate"
    woken = resonance(memory(ctx), ctx, unit(state.scene.vector), state.scene.keys)
    emit(runtime, {"event": "woke", "depth": 0, "scenes": [r.id for r in top_recalled(woken, ctx.top_k)]})
    covered = sorted({k for r in woken.values() if r.score >= ctx.wake_threshold for k in r.keys})
    return {"active": woken, "retrievals": 1, "covered": covered}
