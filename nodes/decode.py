"""Output Synthesizer: decode the field into a short answer and the chain of evidence behind it."""

from __future__ import annotations

from langgraph.runtime import Runtime

from adapters.answer_reader import AnswerReader
from adapters.decoders import load_decoder
from nodes.resonate import top_recalled
from nodes.resources import memory, question_vector, settings
from state.context import Context
from state.thinking import ThinkingState

READER = AnswerReader()  # holds no state between questions


def decode(state: ThinkingState, runtime: Runtime[Context]) -> dict:
    """Read the short answer and its evidence from the strongest scenes; a model decoder may speak instead.

    The extractive reading always runs (it is cheap): it is the default answer, and a model
    decoder's fallback evidence when the model cites no scene. A model decoder is a LangChain
    chat model called inside this node, so `stream_mode="messages"` yields its tokens.
    """
    ctx = settings(runtime)
    mem = memory(ctx)
    scenes = top_recalled(state.active, ctx.top_k)
    with mem.couplings.reading() as graph:
        reading = READER.read(state.question, scenes, graph, mem.embedder)
    decoder = load_decoder(ctx.decoder, mem.embedder, model=ctx.decoder_model, adapter=ctx.decoder_adapter,
                           quantize=ctx.decoder_quantize, max_new_tokens=ctx.max_new_tokens,
                           timeout_s=ctx.decoder_timeout_s)
    field = question_vector(mem, state.scene)  # the state holds no vectors: the question's, from the cache
    out = decoder.decode(state.question, field, scenes, state.formulas, reading)
    return {"answer": out.answer, "evidence": out.evidence, "citations": out.citations}
