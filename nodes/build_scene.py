"""SceneBuilder: the parse becomes a scene — components, couplings, a vector and its delta to the field."""

from __future__ import annotations

import hashlib
import logging

import numpy as np
from langgraph.runtime import Runtime

from adapters.lexicon import compose_scene
from nodes.resonate import top_recalled
from nodes.resources import field_vector, memory, query_vectors, settings
from state.context import Context
from state.errors import InterpreterOutputInvalid
from state.models import Scene
from state.thinking import ThinkingState, epoch_of

log = logging.getLogger(__name__)
CARRY_DISCOUNT = 0.5


def interpreted(scene: Scene, ctx: Context) -> Scene:
    """The interpreter model's components and couplings when it is configured and its JSON validates."""
    if not ctx.interpreter:
        return scene
    from adapters.scene_interpreter import load_interpreter

    try:
        draft = load_interpreter(ctx.interpreter, ctx.max_new_tokens, ctx.decoder_timeout_s).draft(scene.text)
    except InterpreterOutputInvalid as exc:
        log.warning("interpreter output rejected, using the rule-based scene: %s", exc)
        return scene
    return scene.model_copy(update={"components": draft.components, "couplings": draft.couplings,
                                    "meta": {**scene.meta, "interpreter": ctx.interpreter}})


def build_scene(state: ThinkingState, runtime: Runtime[Context]) -> dict:
    """Compose the question's scene and place it in the shared space."""
    assert state.parse is not None, "interpret runs before build_scene"
    scene_id = "q-" + hashlib.sha256(state.parse.text.encode()).hexdigest()[:16]
    ctx = settings(runtime)
    mem = memory(ctx)
    scene = interpreted(compose_scene(scene_id, state.parse), ctx)
    vector = query_vectors(mem, [state.parse.text])[0]  # it asks: the query role; cached for resonate
    # Delta: how far this scene moves the field it arrives in, the last turn's final field (1.0 on a new thread).
    delta = 1.0
    if state.scene is not None and state.active:
        last, _ = field_vector(mem, state.scene, top_recalled(state.active, ctx.top_k))
        delta = 1.0 - float(np.dot(vector, last))
    scene = scene.model_copy(update={"vector": [], "delta": round(delta, 6)})
    # A new question is a new turn: probes, covered bridges and the retrieval budget are per turn. The
    # strongest scenes carry (bounded by top_k), tagged with a new field revision so that the `active` reducer
    # drops the older turn's field, and start half the last top score lower: the new question's own evidence
    # leads unless the old scenes resonate with it again.
    epoch = epoch_of(state.active) + 1
    update = {"scene": scene, "turn": state.turn + 1, "depth": 0, "frontier": [], "retrievals": 0, "probes": [],
              "covered": [], "pending": [], "formulas": [], "crystals": [], "answer": "", "evidence": [],
              "citations": []}
    carried = top_recalled(state.active, ctx.top_k)
    if carried:  # a scene forgotten since the last turn does not carry
        held = mem.scenes([r.id for r in carried])
        carried = [r for r in carried if r.id in held]
    if carried:
        drop = max(0.0, carried[0].score) * CARRY_DISCOUNT
        update["active"] = {r.id: r.model_copy(update={"score": round(r.score - drop, 6), "epoch": epoch})
                            for r in carried}
    return update
