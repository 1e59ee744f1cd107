"""What a node reaches through the runtime: the run's settings, the process-wide memory and its vectors.

Vectors never enter the graph state. A question's or a probe's vector is its text embedded
once per process (`query_vectors`); a scene's comes from the memory's scene cache; the
field is recomputed from the question and the scenes it settled on (`field_vector`).
Another process (an agent service, a resumed thread) embeds the same text to the same numbers.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
from langgraph.runtime import Runtime

from adapters.memory import Memory, open_memory
from state.context import Context
from state.models import Recalled, Scene

QUERY_CACHE = 4_096  # question and probe vectors kept per process
_QUERIES: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()


def settings(runtime: Runtime[Context] | None) -> Context:
    """The run's Context; defaults (with env overrides) when the caller passed none."""
    ctx = getattr(runtime, "context", None)
    return ctx if isinstance(ctx, Context) else Context()


def memory(ctx: Context) -> Memory:
    return open_memory(ctx.data_dir, ctx.embedder, store_url=ctx.store_url, state_url=ctx.state_url)


def unit(vector) -> np.ndarray:
    v = np.asarray(vector, dtype=np.float32)
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v


def emit(runtime: Runtime[Context] | None, event: dict) -> None:
    """Send a readable progress event to the `custom` stream, when someone listens."""
    writer = getattr(runtime, "stream_writer", None)
    if writer is not None:
        writer(event)


def query_vectors(mem: Memory, texts: list[str]) -> np.ndarray:
    """Query-role vectors of texts (questions, probes), embedded once per process in one batch for the misses."""
    name = mem.embedder.name
    missing = list(dict.fromkeys(t for t in texts if (name, t) not in _QUERIES))
    if missing:
        for text, vector in zip(missing, mem.embedder.embed(missing, role="query")):
            _QUERIES[(name, text)] = np.asarray(vector, dtype=np.float32)
    out = [_QUERIES[(name, t)] for t in texts]
    for t in texts:
        _QUERIES.move_to_end((name, t))
    while len(_QUERIES) > QUERY_CACHE:
        _QUERIES.popitem(last=False)
    return np.stack(out) if out else np.zeros((0, mem.embedder.dim), dtype=np.float32)


def question_vector(mem: Memory, scene: Scene) -> np.ndarray:
    """The question scene's unit vector (the field as it starts)."""
    return unit(query_vectors(mem, [scene.text])[0])


def final_field(question: np.ndarray, scene_vectors: list[np.ndarray], scores: list[float]) -> np.ndarray:
    """The field a run settles on: the question plus the score-weighted vectors of its strongest scenes."""
    return unit(question + sum(s * v for s, v in zip(scores, scene_vectors)) / max(len(scores), 1))


def field_vector(mem: Memory, scene: Scene, top: list[Recalled]) -> tuple[np.ndarray, list[str]]:
    """The final field of a question and the scenes it settled on (those the store still holds)."""
    stored = mem.scenes([r.id for r in top])
    present = [r for r in top if r.id in stored]
    field = final_field(question_vector(mem, scene), [stored[r.id].vector for r in present],
                        [r.score for r in present])
    return field, [r.id for r in present]
