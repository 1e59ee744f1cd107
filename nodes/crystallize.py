"""Archetype guide: log the final field; when a field recurs, create or strengthen a crystal.

Only runs with `write_back` (on for `chat`) change memory; other runs are read-only.

The final field is the question vector plus the score-weighted vectors of the
scenes it settled on (`nodes.resources.final_field`; recomputed, since the state
holds no vectors). A field within `crystal_threshold` cosine of an existing
crystal strengthens it; one that close to an earlier logged field (but no
crystal) forms a new crystal from both. Crystals then bias resonance.
"""

from __future__ import annotations

import hashlib

import numpy as np
from langgraph.runtime import Runtime

from nodes.resonate import top_recalled
from nodes.resources import emit, field_vector, memory, settings, unit
from state.context import Context
from state.models import Crystal
from state.thinking import ThinkingState

MAX_CRYSTAL_SCENES = 12


def crystallize(state: ThinkingState, runtime: Runtime[Context]) -> dict:
    """Fold this run's field into the crystals collection."""
    ctx = settings(runtime)
    mem = memory(ctx)
    top = top_recalled(state.active, ctx.top_k)
    assert state.scene is not None, "build_scene runs before crystallize"
    field, scene_ids = field_vector(mem, state.scene, top)
    crystals: list[Crystal] = []
    vectors: list[np.ndarray] = []  # the crystals' vectors go to the store, never into the state
    near = mem.dense(field[None, :], 1, kind="crystals")[0]
    if near and near[0].dense >= ctx.crystal_threshold:
        old = mem.store.get([near[0].id], kind="crystals", vectors=True)[near[0].id]
        count = int(old["meta"].get("count", 1)) + 1
        vectors.append(unit(old["vector"] * (count - 1) + field))
        ids = list(dict.fromkeys(list(old["meta"].get("scene_ids", [])) + scene_ids))[:MAX_CRYSTAL_SCENES]
        crystals.append(Crystal(id=near[0].id, label=near[0].text, strength=float(count), count=count, scene_ids=ids))
    else:
        echo = mem.dense(field[None, :], 1, kind="fields")[0]
        if echo and echo[0].dense >= ctx.crystal_threshold:
            past = mem.store.get([echo[0].id], kind="fields", vectors=True)[echo[0].id]
            ids = list(dict.fromkeys(scene_ids + list(past["meta"].get("scene_ids", []))))[:MAX_CRYSTAL_SCENES]
            vectors.append(unit(past["vector"] + field))
            crystals.append(Crystal(id="c-" + echo[0].id[2:], label=state.question[:200], strength=2.0, count=2,
                                    scene_ids=ids))
    if not ctx.write_back:  # read-only run: report the recurrence it found, store nothing
        return {"crystals": crystals}
    field_id = "f-" + hashlib.sha256((state.question + "|".join(scene_ids)).encode()).hexdigest()[:16]
    mem.store.upsert([field_id], field[None, :], [state.question[:2000]],
                     [{"kind": "field", "scene_ids": scene_ids}], kind="fields")
    if crystals:
        c = crystals[0]
        mem.store.upsert([c.id], np.array(vectors[:1]), [c.label],
                         [{"kind": "crystal", "count": c.count, "strength": c.strength, "scene_ids": c.scene_ids}],
                         kind="crystals")
        emit(runtime, {"event": "crystal", "id": c.id, "label": c.label, "count": c.count})
    return {"crystals": crystals}
