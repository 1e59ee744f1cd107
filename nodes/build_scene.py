"""SceneBuilder: the parse becomes a scene — components, couplings, a vector and its delta to the field."""

from __future__ import annotations

import hashlib
import logging

import numpy as np
from langgraph.runtime import Runtime
from langgraph.types import Overwrite

from adapters.lexicon import compose_scene
from nodes.resources import memory, settings
from state.context import Context
from state.errors import InterpreterOutputInvalid
from state.models import Scene
from state.thinking import ThinkingState

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
    scene = interpreted(compose_scene(scene_id, state.parse), ctx)
    vector = memory(ctx).embedder.embed_one(state.parse.text, role="query")  # it asks: the query role
    # Delta: how far this scene moves the field it arrives in (1.0 when the field is empty).
    delta = 1.0 - float(np.dot(vector, state.field)) if len(state.field) == len(vector) else 1.0
    scene = scene.model_copy(update={"vector": vector.tolist(), "delta": delta})
    # A new question is a new turn: on a checkpointed thread the accumulating fields would carry the last
    # turn's probes and spent retrieval budget, so they restart here (a fresh run starts at these values anyway).
    # The field and the active scenes do carry: they are what the conversation has woken so far.
    turn = {"retrievals": Overwrite(0), "probes": Overwrite([]), "covered": Overwrite([]), "pending": []}
    if state.active:
        # Carried scenes keep their order but start half the last turn's top score lower, so the new
        # question's own evidence leads unless the old scenes resonate with it again.
        drop = max(0.0, *(r.score for r in state.active.values())) * CARRY_DISCOUNT
        turn["active"] = Overwrite({sid: r.model_copy(update={"score": round(r.score - drop, 6)})
                                    for sid, r in state.active.items()})
    return {"scene": scene, "field": scene.vector, "depth": 0, "frontier": [], **turn}
