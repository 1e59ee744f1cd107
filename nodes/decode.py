"""Output Synthesizer: decode the field into text that cites the scenes it rests on."""

from __future__ import annotations

from langgraph.runtime import Runtime

from adapters.decoders import load_decoder
from nodes.resonate import top_recalled
from nodes.resources import memory, settings, unit
from state.context import Context
from state.thinking import ThinkingState


def decode(state: ThinkingState, runtime: Runtime[Context]) -> dict:
    """Compose the answer from the strongest scenes (and formulas) of the field.

    A model decoder is a LangChain chat model called inside this node, so
    `stream_mode="messages"` yields its tokens as they are generated.
    """
    ctx = settings(runtime)
    decoder = load_decoder(ctx.decoder, memory(ctx).embedder, ctx.answer_sentences, model=ctx.decoder_model,
                           adapter=ctx.decoder_adapter, quantize=ctx.decoder_quantize,
                           max_new_tokens=ctx.max_new_tokens, timeout_s=ctx.decoder_timeout_s)
    out = decoder.decode(state.question, unit(state.field), top_recalled(state.active, ctx.top_k), state.formulas)
    return {"answer": out.answer, "citations": out.citations}
