"""Input Interpreter: check and normalise the question, split it into clauses, pull out terms and entities."""

from __future__ import annotations

from langgraph.runtime import Runtime

from adapters.lexicon import parse
from nodes.resources import settings
from state.context import Context
from state.errors import EmptyInput, InputTooLarge
from state.thinking import ThinkingState


def check_question(question: object, max_chars: int) -> str:
    if not isinstance(question, str):
        raise EmptyInput(f"the question must be text, got {type(question).__name__}")
    if not question.strip():
        raise EmptyInput("the question is empty: ask something, e.g. scenemind ask \"Who directed ...?\"")
    if len(question) > max_chars:
        raise InputTooLarge(
            f"the question is {len(question):,} characters, over the limit of {max_chars:,} "
            "(SCENEMIND_MAX_INPUT_CHARS): ingest long text as scenes and ask about it instead"
        )
    return question


def interpret(state: ThinkingState, runtime: Runtime[Context]) -> dict:
    """Parse the question into clauses, entities and salient terms."""
    question = check_question(state.question, settings(runtime).max_input_chars)
    return {"parse": parse(question)}
