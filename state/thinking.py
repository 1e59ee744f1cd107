"""The graph state, what callers give and get, and the reducer that merges what parallel probes write.

The state holds no vectors: scenes, probes and the field are ids and texts (vectors
live in per-process caches and are recomputed from the text when a process lacks
them), so a checkpoint or a `values` event stays a few KB.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field
from pydantic_core import to_jsonable_python
from typing_extensions import Annotated

from state.models import Crystal, Evidence, Formula, Parse, Probe, Recalled, Scene


def keep_strongest(left: dict[str, Recalled], right: dict[str, Recalled]) -> dict[str, Recalled]:
    """Merge recalled scenes by id, keeping the higher score (probes may wake the same scene).

    An update of a newer field revision (`epoch`) replaces the older field: build_scene re-tags the
    scenes a new turn carries and review the scenes a person kept, so no update needs an `Overwrite`.
    """
    newest = epoch_of(right)
    merged = {sid: r for sid, r in (left or {}).items() if r.epoch >= newest}
    for sid, item in (right or {}).items():
        if sid not in merged or item.score > merged[sid].score:
            merged[sid] = item
    return merged


def epoch_of(active: dict[str, Recalled] | None) -> int:
    """The field's current revision: the newest epoch among its scenes (0 for an empty field)."""
    return max((r.epoch for r in (active or {}).values()), default=0)


class AskInput(BaseModel):
    """What a caller gives (Studio's input form, the SDK's `input`)."""

    question: str = Field(description="the question to think about")


class AskOutput(BaseModel):
    """What a caller gets back: the answer, its evidence and how the run got there; no vectors."""

    answer: str = ""
    evidence: list[Evidence] = Field(default_factory=list, description="the chain of sentences behind the answer")
    citations: list[str] = Field(default_factory=list, description="scene ids the evidence rests on")
    probes: list[Probe] = Field(default_factory=list, description="this turn's fractal sub-probes")
    formulas: list[Formula] = Field(default_factory=list, description="linked scenes of the final field")
    crystals: list[Crystal] = Field(default_factory=list, description="recurring fields this run met")
    retrievals: int = Field(default=0, description="store queries this turn spent")


class ThinkingState(AskInput):
    """One run of thinking: the question, its scene, the field and what woke."""

    turn: int = Field(default=0, description="questions asked on this thread so far")
    parse: Parse | None = None
    scene: Scene | None = None
    active: Annotated[dict[str, Recalled], keep_strongest] = Field(
        default_factory=dict, description="the field: scene id -> how strongly it resonates")
    # Only `expand` writes these (build_scene resets them per turn), so they need no reducer.
    probes: list[Probe] = Field(default_factory=list)
    covered: list[str] = Field(default_factory=list, description="bridge entities already probed")
    frontier: list[str] = Field(default_factory=list, description="scene ids already expanded")
    pending: list[str] = Field(default_factory=list, description="ids of the probes the last expansion spawned")
    depth: int = 0
    retrievals: int = Field(default=0, description="store queries this turn: resonate + one per probe")
    formulas: list[Formula] = Field(default_factory=list)
    crystals: list[Crystal] = Field(default_factory=list)
    answer: str = ""
    evidence: list[Evidence] = Field(default_factory=list, description="the chain of sentences behind the answer")
    citations: list[str] = Field(default_factory=list)


def plain(value: Any) -> Any:
    """A graph result (or any part of it) as plain JSON-ready data: pydantic models become dicts.

    `json.dumps(plain(graph.invoke(...)))` works; vectors a model may hold are left out.
    """
    return to_jsonable_python(value, exclude_none=False)
