"""Domain models: the things scenemind thinks with.

Vectors are plain lists of floats where a model carries one. The graph state
holds none (ids and texts only; vectors live in per-process caches), so what is
checkpointed and streamed stays small and plain.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

Vector = list[float]

ComponentKind = Literal["entity", "term", "clause", "title"]
ProbeReason = Literal["question", "uncovered", "bridge", "residual"]


class Parse(BaseModel):
    """The lexico-scenographic parse of one text."""

    text: str
    language: Literal["en", "ru", "other"] = "en"
    clauses: list[str] = Field(default_factory=list)
    entities: list[str] = Field(default_factory=list)
    terms: list[str] = Field(default_factory=list)


class Component(BaseModel):
    """One part of a scene: a named entity, a salient term, a clause or the title."""

    text: str
    kind: ComponentKind
    key: str = Field(description="normalised form used to couple scenes")
    weight: float = 1.0


class Coupling(BaseModel):
    """A weighted link between two components of a scene, or between two scenes."""

    source: str
    target: str
    relation: str = "co-occurs"
    weight: float = 1.0


class Scene(BaseModel):
    """A text turned into components, couplings and one vector in the shared space."""

    id: str
    text: str
    title: str | None = None
    components: list[Component] = Field(default_factory=list)
    couplings: list[Coupling] = Field(default_factory=list)
    vector: Vector = Field(default_factory=list)
    delta: float | None = Field(default=None, description="1 - cos(scene, field before it): how new it is")
    meta: dict[str, Any] = Field(default_factory=dict)


class Recalled(BaseModel):
    """A scene woken from memory, with how strongly and why."""

    id: str
    text: str
    title: str | None = None
    score: float = 0.0
    dense: float = 0.0
    via: str = "question"
    depth: int = 0
    kind: Literal["scene", "formula", "crystal"] = "scene"
    epoch: int = Field(default=0, description="the field's revision that holds it: an update of a newer revision "
                                              "replaces the older field (a new turn, an edit in review)")


class Evidence(BaseModel):
    """One link of an answer's chain of evidence: a sentence of a scene, in hop order."""

    scene_id: str
    title: str | None = None
    text: str = Field(description="the sentence as the scene holds it")
    hop: int = Field(default=1, description="1 for the scene the question names, 2 for the one it bridges to ...")
    role: Literal["answer", "bridge", "option", "closest"] = Field(
        default="answer", description="answer: holds the answer; bridge: leads to the next hop; option: an item "
                                      "a comparison weighs; closest: shown when the answer is not in memory")


class Probe(BaseModel):
    """A fractal sub-query spawned where the field is still unresolved."""

    id: str
    text: str
    depth: int
    reason: ProbeReason
    target: str | None = None
    parent: str | None = None
    entities: dict[str, float] = Field(default_factory=dict, description="entity -> rarity this probe seeds")
    offset: float = Field(default=0.0, description="chain discount: the parent's score gap to the top scene")
    epoch: int = Field(default=0, description="the field revision it was spawned in (what it wakes is tagged so)")
    # Never in the graph state (the probe node embeds its text through a per-process cache); kept so that a
    # caller may hand a vector over, and left out of every dump.
    vector: Vector = Field(default_factory=list, exclude=True, repr=False)


class Formula(BaseModel):
    """Linked scenes compressed: a chain of couplings, a summary and a vector."""

    id: str
    chain: list[str]
    links: list[Coupling] = Field(default_factory=list)
    summary: str


class Crystal(BaseModel):
    """An archetype: a field that keeps recurring across runs."""

    id: str
    label: str
    strength: float = 1.0
    count: int = 1
    scene_ids: list[str] = Field(default_factory=list)
