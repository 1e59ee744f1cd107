"""Archetype guide: log the final field; when a field recurs, create or strengthen a crystal.

Only runs with `write_back` (on for `chat`) change memory; other runs are read-only.

The final field is the question vector plus the score-weighted vectors of the
scenes it settled on. A field within `crystal_threshold` cosine of an existing
crystal strengthens it; one that close to an earlier logged field (but no
crystal) forms a new crystal from both. Crystals then bias resonance.
"""

from __future__ import annotations

import hashlib

import numpy as np
from langgraph.runtime import Runtime

from nodes.resonate import top_recalled
from nodes.resources import emit, memory, settings, unit
from state.context import Context
from state.models import Crystal
from state.thinking import ThinkingState

MAX_CRYSTAL_SCENES = 12


def final_field(question: np.ndarray, scene_vectors: list[np.ndarray], scores: list[float]) -> np.ndarray:
    return unit(question + sum(s * v for s, v in zip(scores, scene_vectors)) / max(len(scores), 1))


def crystallize(state: ThinkingState, runtime: Runtime[Context]) -> dict:
    """Fold this run's field into the crystals collection."""
    ctx = settings(runtime)
    mem = memory(ctx)
    top = top_recalled(state.active, ctx.top_k)
    stored = mem.scenes([s.id for s in top])
    present = [s for s in top if s.id in stored]
    field = final_field(unit(state.field), [stored[s.id].vector for s in present], [s.score for s in present])
    scene_ids = [s.id for s in present]
    crystals: list[Crystal] = []
    near = mem.dense(field[None, :], 1, kind="crystals")[0]
    if near and near[0].dense >= ctx.crystal_threshold:
        old = mem.store.get([near[0].id], kind="crystals", vectors=True)[near[0].id]
        count = int(old["meta"].get("count", 1)) + 1
        vector = unit(old["vector"] * (count - 1) + field)
        ids = list(dict.fromkeys(list(old["meta"].get("scene_ids", [])) + scene_ids))[:MAX_CRYSTAL_SCENES]
        crystals.append(Crystal(id=near[0].id, label=near[0].text, vector=vector.tolist(), strength=float(count),
                                count=count, scene_ids=ids))
    else:
        echo = mem.dense(field[None, :], 1, kind="fields")[0]
        if echo and echo[0].dense >= ctx.crystal_threshold:
            past = mem.store.get([echo[0].id], kind="fields", vectors=True)[echo[0].id]
            ids = list(dict.fromkeys(scene_ids + list(past["meta"].get("scene_ids", []))))[:MAX_CRYSTAL_SCENES]
            crystals.append(Crystal(id="c-" + echo[0].id[2:], label=state.question[:200],
                                    vector=unit(past["vector"] + field).tolist(), strength=2.0, count=2,
                                    scene_ids=ids))
    if not ctx.write_back:  # read-only run: report the recurrence it found, store nothing
        return {"field": field.tolist(), "crystals": crystals}
    field_id = "f-" + hashlib.sha256((state.question + "|".join(scene_ids)).encode()).hexdigest()[:16]
    mem.store.upsert([field_id], field[None, :], [state.question[:2000]],
                     [{"kind": "field", "scene_ids": scene_ids}], kind="fields")
    if crystals:
        c = crystals[0]
        mem.store.upsert([c.id], np.array([c.vector]), [c.label],
                         [{"kind": "crystal", "count": c.count, "strength": c.strength, "scene_ids": c.scene_ids}],
                         kind="crystals")
        emit(runtime, {"event": "crystal", "id": c.id, "count": c.count})
    return {"field": field.tolist(), "crystals": crystals}
