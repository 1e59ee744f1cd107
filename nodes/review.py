"""Review: with `Context.review` on, pause before the field is formulated and decoded, so a person
(LangGraph Studio, the SDK) can see it, drop scenes from it or pin scenes to its top.

The run stops with an `interrupt` whose value lists the field; it goes on with
`Command(resume={"drop": [ids], "pin": [ids]})`; `{"drop": []}` keeps it as it is. (Not `{}` or `None`:
LangGraph reads an empty resume map as "resume nothing" and the run pauses again.)
The edited field is a new revision of `active`, so the reducer replaces the old one.
"""

from __future__ import annotations

from typing import Any

from langgraph.runtime import Runtime
from langgraph.types import interrupt

from nodes.resonate import top_recalled
from nodes.resources import emit, settings
from state.errors import SettingsError
from state.thinking import ThinkingState, epoch_of

SHOWN_CHARS = 300


def edited(state: ThinkingState, answer: Any, top_k: int) -> dict:
    """The field after a person's edit: `drop` removes scenes, `pin` puts scenes (in order) above all others."""
    if answer in (None, {}, ""):
        return {}
    if not isinstance(answer, dict) or set(answer) - {"drop", "pin"}:
        raise SettingsError(f'resume a review with {{"drop": [scene ids], "pin": [scene ids]}}, got {answer!r}')
    drop, pin = ([str(i) for i in answer.get(key) or []] for key in ("drop", "pin"))
    unknown = [i for i in drop + pin if i not in state.active]
    if unknown:
        raise SettingsError(f"review names scenes that are not in the field: {unknown}; the field holds "
                            f"{[r.id for r in top_recalled(state.active, top_k)]}")
    epoch = epoch_of(state.active) + 1
    top = max((r.score for r in state.active.values()), default=0.0)
    field = {sid: r.model_copy(update={"epoch": epoch}) for sid, r in state.active.items() if sid not in drop}
    for n, sid in enumerate(pin):  # the first pinned scene leads
        field[sid] = field[sid].model_copy(update={"score": round(top + len(pin) - n, 6)})
    return {"active": field}


def review(state: ThinkingState, runtime: Runtime) -> dict:
    """Show the field to a person and apply what they change (only with `review` on)."""
    ctx = settings(runtime)
    if not ctx.review:
        return {}
    top = top_recalled(state.active, ctx.top_k)
    answer = interrupt({
        "question": state.question,
        "field": [{"id": r.id, "title": r.title, "score": round(r.score, 3), "text": r.text[:SHOWN_CHARS]}
                  for r in top],
        "resume": 'Command(resume={"drop": [scene ids], "pin": [scene ids]}); {"drop": []} keeps the field',
    })
    update = edited(state, answer, ctx.top_k)
    if update:
        emit(runtime, {"event": "reviewed", "drop": (answer or {}).get("drop", []), "pin": (answer or {}).get("pin", [])})
    return update
