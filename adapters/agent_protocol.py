"""What agent services and the graph say to each other over HTTP: typed JSON, never pickle.

A node call is `POST {agent_url}/v1/{node}` with the embedder's name and
dimension, the run settings that shape the node's work, and the node's input
(the whole `ThinkingState`, or one `Probe` for the probe node). Vectors travel
as plain float arrays; JSON floats round-trip exactly, so a remote node sees
the very numbers an in-process one would.
"""

from __future__ import annotations

import math
from dataclasses import MISSING, fields
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator

from state.context import Context
from state.models import Probe
from state.thinking import ThinkingState

# Agent of the source design -> the graph nodes it runs. expand (the DeltaManager) travels with the
# resonator: it reads the same couplings, and so a run with every node remote opens no store locally.
AGENT_NODES: dict[str, tuple[str, ...]] = {
    "interpreter": ("interpret",),
    "scene-former": ("build_scene",),
    "resonator": ("resonate", "expand", "probe"),
    "formulator": ("formulate",),
    "decoder": ("decode",),
    "archetype-guide": ("crystallize",),
}
NODE_AGENT = {node: agent for agent, nodes in AGENT_NODES.items() for node in nodes}
PROBE_NODES = frozenset({"probe"})  # nodes fed one Probe by `Send`, not the whole state


class EmbedderTag(BaseModel):
    """Which space the vectors live in; a service refuses vectors from another embedder (409)."""

    name: str = Field(max_length=512)
    dim: int = Field(ge=1, le=65_536)


# Only numbers travel: paths, URLs and model names stay the service's own (a caller must not point a
# service at other files), and so do the service's own limits and budgets below.
SERVICE_OWN = frozenset({"max_input_chars", "max_new_tokens", "decoder_timeout_s", "agent_timeout_s"})
# Tighter bounds where a large value would make one request expensive; other numbers get GENERIC_BOUND.
BOUNDS: dict[str, tuple[float, float]] = {
    "top_k": (1, 200), "dense_k": (1, 1_000), "lexical_k": (0, 1_000), "max_depth": (0, 16),
    "retrieval_budget": (0, 1_024), "max_probes": (0, 64), "spread_iterations": (0, 200),
    "answer_sentences": (1, 100),
}
GENERIC_BOUND = (-1_000_000, 1_000_000)


def _run_settings_fields() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in fields(Context):
        kind = type(getattr(Context, f.name, None)) if f.default is not MISSING else None
        if kind not in (int, float, bool) or f.name in SERVICE_OWN:
            continue
        if kind is bool:
            out[f.name] = (bool, ...)
        else:
            low, high = BOUNDS.get(f.name, GENERIC_BOUND)
            out[f.name] = (kind, Field(ge=low, le=high, allow_inf_nan=False) if kind is float else Field(ge=low, le=high))
    return out


class _RunSettingsBase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @classmethod
    def of(cls, ctx: Context) -> "_RunSettingsBase":
        return cls(**{name: getattr(ctx, name) for name in cls.model_fields})


# The Context knobs a node's work depends on, derived from Context so that a new knob travels too.
RunSettings = create_model("RunSettings", __base__=_RunSettingsBase, **_run_settings_fields())


def first_unfit(value: Any, where: str = "body", depth: int = 0) -> str | None:
    """Where the body holds a number JSON cannot carry (NaN, ±Infinity, 1e400) or text that is not UTF-8."""
    if depth > 64:
        return f"{where} (nested deeper than 64 levels)"
    if isinstance(value, float) and not math.isfinite(value):
        return f"{where} = {value} (not a finite number)"
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return f"{where} (text that is not valid UTF-8)"
        return None
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        found = first_unfit(item, f"{where}.{key}" if isinstance(key, str) else f"{where}[{key}]", depth + 1)
        if found:
            return found
    return None


class _FitRequest(BaseModel):
    """Refuses, before any node runs, what would poison the store or the reply (422, never 500)."""

    @model_validator(mode="before")
    @classmethod
    def _only_fit_values(cls, data: Any) -> Any:
        found = first_unfit(data)
        if found:
            raise ValueError(f"cannot accept {found}")
        return data


class StateRequest(_FitRequest):
    embedder: EmbedderTag
    settings: RunSettings  # type: ignore[valid-type]
    state: ThinkingState


class ProbeRequest(_FitRequest):
    embedder: EmbedderTag
    settings: RunSettings  # type: ignore[valid-type]
    probe: Probe


# Every state field, optional: what a node returns is a partial update of the state.
StateUpdate = create_model(
    "StateUpdate",
    __config__=ConfigDict(extra="forbid"),
    **{name: (Optional[f.annotation], None) for name, f in ThinkingState.model_fields.items()},  # noqa: UP045
)


class NodeReply(BaseModel):
    agent: str
    node: str
    update: StateUpdate  # type: ignore[valid-type]
    overwrite: list[str] = Field(default_factory=list, description="update keys that replace, not merge")
    events: list[dict[str, Any]] = Field(default_factory=list, description="the node's custom stream events")


class ErrorBody(BaseModel):
    error: str = Field(description="the domain error's class, e.g. EmbedderMismatch")
    detail: str = Field(description="what went wrong and what to do")
    agent: str = ""
    node: str | None = None


class Health(BaseModel):
    status: str = "ok"
    agent: str
    nodes: list[str]
    embedder: EmbedderTag
    store: str = Field(description="embedded (a folder) | server (a Chroma URL) | none")
