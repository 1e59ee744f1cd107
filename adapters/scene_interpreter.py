"""A model interpreter: text -> scene JSON (components and couplings), checked against the schema.

Trained with `scenemind train interpreter`; `build_scene` uses it when
`Context.interpreter` is set and falls back to the rule-based scene when the
output does not validate.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Any

from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from adapters.lexicon import entity_key, term_key
from state.errors import InterpreterOutputInvalid
from state.models import Component, Coupling

INTERPRETER_SYSTEM = ("Turn the text into a scene. Answer with one JSON object: "
                      '{"components": [{"text", "kind": entity|term|clause|title}], '
                      '"couplings": [{"source", "target", "relation"}]} and nothing else.')


class SceneDraft(BaseModel):
    """What an interpreter model must produce."""

    model_config = ConfigDict(extra="forbid")
    components: list[Component] = Field(min_length=1)
    couplings: list[Coupling] = Field(default_factory=list)


def interpreter_messages(text: str) -> list[BaseMessage]:
    return [SystemMessage(INTERPRETER_SYSTEM), HumanMessage(f"Text: {text.strip()}")]


def validate_draft(raw: Any) -> SceneDraft:
    """A dict (keys of components filled in when missing) -> a valid SceneDraft, or InterpreterOutputInvalid."""
    if not isinstance(raw, dict):
        raise InterpreterOutputInvalid("the scene must be a JSON object with components and couplings")
    components = raw.get("components")
    if isinstance(components, list):
        filled = []
        for c in components:
            if isinstance(c, dict) and "key" not in c and isinstance(c.get("text"), str):
                key = term_key(c["text"]) if c.get("kind") == "term" else entity_key(c["text"])
                c = {**c, "key": key}
            filled.append(c)
        raw = {**raw, "components": filled}
    try:
        return SceneDraft.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InterpreterOutputInvalid(f"{where}: {first['msg']} ({exc.error_count()} error(s))") from exc


def scene_json(draft: SceneDraft) -> str:
    """The compact JSON the model learns to write (keys are derived, so they are left out)."""
    return json.dumps({"components": [{"text": c.text, "kind": c.kind} for c in draft.components],
                       "couplings": [{"source": c.source, "target": c.target, "relation": c.relation}
                                     for c in draft.couplings]}, ensure_ascii=False, separators=(",", ":"))


def parse_draft(text: str) -> SceneDraft:
    """The first JSON object in a model's output, validated."""
    match = re.search(r"\{.*\}", text, flags=re.S)
    if not match:
        raise InterpreterOutputInvalid(f"no JSON object in the output: {text[:120]!r}")
    try:
        raw = json.loads(match.group(0))
    except json.JSONDecodeError as exc:
        raise InterpreterOutputInvalid(f"not valid JSON ({exc.msg}): {match.group(0)[:120]!r}") from exc
    return validate_draft(raw)


class SceneInterpreter:
    """A chat model that writes scenes; its tokens stay out of the `messages` stream (tag `nostream`)."""

    def __init__(self, chat: Any):
        self.chat = chat.with_config(tags=["nostream"])

    def draft(self, text: str) -> SceneDraft:
        reply = self.chat.invoke(interpreter_messages(text))
        return parse_draft(str(reply.content))


@lru_cache(maxsize=2)
def load_interpreter(spec: str, max_new_tokens: int = 256, timeout_s: float = 60.0) -> SceneInterpreter:
    """`spec`: a `scenemind train interpreter` adapter folder (it names its base) or hf:/path/to/model."""
    from adapters.chat_models import LocalChatModel

    path = spec[3:] if spec.startswith("hf:") else spec
    return SceneInterpreter(LocalChatModel(model_path=path, max_new_tokens=max_new_tokens, timeout_s=timeout_s))
