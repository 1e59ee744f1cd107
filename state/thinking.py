"""The graph state and the reducers that merge what parallel probes write."""

from __future__ import annotations

import operator
from typing import Annotated

from pydantic import BaseModel, Field

from state.models import Crystal, Evidence, Formula, Parse, Probe, Recalled, Scene, Vector


def keep_strongest(left: dict[str, Recalled], right: dict[str, Recalled]) -> dict[str, Recalled]:
    """Merge recalled scenes by id, keeping the higher score (probes may wake the same scene)."""
    merged = dict(left or {})
    for sid, item in (right or {}).items():
        if sid not in merged or item.score > merged[sid].score:
            merged[sid] = item
    return merged


def append_probes(left: list[Probe], right: list[Probe]) -> list[Probe]:
    """Append probes, skipping ids already present (a re-sent probe is the same probe)."""
    seen = {p.id for p in left or []}
    return list(left or []) + [p for p in right or [] if p.id not in seen]


def union(left: list[str], right: list[str]) -> list[str]:
    """Ordered set union."""
    out = list(left or [])
    seen = set(out)
    for item in right or []:
        if item not in seen:
            seen.add(item)
            out.append(item)
    return out


class ThinkingState(BaseModel):
    """One run of thinking: the question, its scene, the field and what woke."""

    question: str
    parse: Parse | None = None
    scene: Scene | None = None
    field: Vector = Field(default_factory=list, description="the current field in the shared space")
    active: Annotated[dict[str, Recalled], keep_strongest] = Field(default_factory=dict)
    probes: Annotated[list[Probe], append_probes] = Field(default_factory=list)
    covered: Annotated[list[str], union] = Field(default_factory=list, description="bridge entities already probed")
    frontier: list[str] = Field(default_factory=list, description="scene ids already expanded")
    pending: list[str] = Field(default_factory=list, description="ids of the probes the last expansion spawned")
    depth: int = 0
    retrievals: Annotated[int, operator.add] = 0
    formulas: list[Formula] = Field(default_factory=list)
    crystals: list[Crystal] = Field(default_factory=list)
    answer: str = ""
    evidence: list[Evidence] = Field(default_factory=list, description="the chain of sentences behind the answer")
    citations: list[str] = Field(default_factory=list)
