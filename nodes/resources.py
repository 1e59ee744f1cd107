"""What a node reaches through the runtime: the run's settings and the process-wide memory."""

from __future__ import annotations

import numpy as np
from langgraph.runtime import Runtime

from adapters.memory import Memory, open_memory
from state.context import Context


def settings(runtime: Runtime[Context] | None) -> Context:
    """The run's Context; defaults (with env overrides) when the caller passed none."""
    ctx = getattr(runtime, "context", None)
    return ctx if isinstance(ctx, Context) else Context()


def memory(ctx: Context) -> Memory:
    return open_memory(ctx.data_dir, ctx.embedder, store_url=ctx.store_url)


def unit(vector) -> np.ndarray:
    v = np.asarray(vector, dtype=np.float32)
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v


def emit(runtime: Runtime[Context] | None, event: dict) -> None:
    """Send a readable progress event to the `custom` stream, when someone listens."""
    writer = getattr(runtime, "stream_writer", None)
    if writer is not None:
        writer(event)
