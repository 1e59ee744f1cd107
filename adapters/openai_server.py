"""An OpenAI-compatible chat endpoint in front of any LangChain chat model (127.0.0.1 only).

POST /v1/chat/completions (JSON, or SSE chunks with "stream": true) and
GET /v1/models — enough for langchain-openai, the `openai` client, and
scenemind's own `openai:` decoder. It is the decoder agent service:

    python -m adapters.openai_server --model /models/Qwen2.5-0.5B-Instruct [--adapter DIR] [--port 8000]
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any, Literal

from fastapi import FastAPI, HTTPException
from fastapi.responses import JSONResponse, StreamingResponse
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from pydantic import BaseModel, Field

from state.errors import InputTooLarge, SceneMindError


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant", "developer"]
    content: str | list[dict[str, Any]] | None = ""


class ChatRequest(BaseModel):
    model: str = ""
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    stop: str | list[str] | None = None


def _text(content: str | list[dict[str, Any]] | None) -> str:
    if isinstance(content, list):  # the content-parts form: keep the text parts
        return "".join(part.get("text", "") for part in content if part.get("type") == "text")
    return content or ""


def to_messages(request: ChatRequest) -> list[BaseMessage]:
    kinds = {"system": SystemMessage, "developer": SystemMessage, "user": HumanMessage, "assistant": AIMessage}
    return [kinds[m.role](_text(m.content)) for m in request.messages]


def status_of(exc: SceneMindError) -> int:
    """The request's fault is 4xx (a client must not retry it), the service's 503."""
    if isinstance(exc, InputTooLarge):
        return 413
    if isinstance(exc, ValueError):  # EmptyInput (no user message, empty text), text that is not UTF-8 ...
        return 400
    return 503


def create_app(chat: Any, model_name: str) -> FastAPI:
    """The endpoint for one chat model, served under `model_name`."""
    app = FastAPI(title="scenemind decoder", version="0.1.0")

    @app.get("/v1/models")
    def models() -> dict:
        return {"object": "list", "data": [{"id": model_name, "object": "model", "created": 0,
                                            "owned_by": "scenemind"}]}

    @app.post("/v1/chat/completions")
    def completions(request: ChatRequest):
        if request.model and request.model != model_name:
            raise HTTPException(404, f"model {request.model!r} is not served here; GET /v1/models lists {model_name!r}")
        options: dict[str, Any] = {}
        limit = request.max_completion_tokens or request.max_tokens
        if limit:
            options["max_tokens"] = limit
        if request.temperature is not None:
            options["temperature"] = request.temperature
        stop = [request.stop] if isinstance(request.stop, str) else request.stop
        messages = to_messages(request)
        rid, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        if request.stream:
            chunks = chat.stream(messages, stop=stop, **options)
            try:  # the first chunk before the headers: a refused question gets its status, not an in-band error
                first = next(chunks, None)
            except SceneMindError as exc:
                raise HTTPException(status_of(exc), str(exc)) from exc
            return StreamingResponse(_sse(chunks, first, rid, created, model_name), media_type="text/event-stream")
        try:
            reply = chat.invoke(messages, stop=stop, **options)
        except SceneMindError as exc:
            raise HTTPException(status_of(exc), str(exc)) from exc
        return JSONResponse({
            "id": rid, "object": "chat.completion", "created": created, "model": model_name,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": reply.content},
                         "finish_reason": finish_reason(reply)}],
            "usage": usage(reply),
        })

    return app


def finish_reason(reply: Any) -> str:
    """OpenAI's finish_reason: "length" when the token limit (or the time limit) cut the reply, else "stop"."""
    reason = (getattr(reply, "response_metadata", None) or {}).get("finish_reason", "stop")
    return "length" if reason in ("length", "time") else "stop"


def usage(reply: Any) -> dict[str, int]:
    got = getattr(reply, "usage_metadata", None) or {}
    return {"prompt_tokens": int(got.get("input_tokens", 0)), "completion_tokens": int(got.get("output_tokens", 0)),
            "total_tokens": int(got.get("total_tokens", 0))}


def _sse(chunks: Iterator[Any], first: Any, rid: str, created: int, model_name: str) -> Iterator[str]:
    def event(delta: dict, finish: str | None = None) -> str:
        body = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model_name,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    yield event({"role": "assistant", "content": ""})
    last = None
    try:
        for chunk in itertools.chain([first] if first is not None else [], chunks):
            last = chunk if getattr(chunk, "response_metadata", None) else last
            if chunk.content:
                yield event({"content": chunk.content})
    except SceneMindError as exc:  # headers are sent already: report in-band, as OpenAI does
        yield f"data: {json.dumps({'error': {'message': str(exc), 'type': 'server_error'}})}\n\n"
        return
    yield event({}, finish_reason(last))
    yield "data: [DONE]\n\n"


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    from adapters.chat_models import LocalChatModel

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="local causal LM folder (or a trained adapter folder)")
    ap.add_argument("--adapter", default="", help="peft adapter folder")
    ap.add_argument("--quantize", default="", choices=["", "4bit", "8bit"])
    ap.add_argument("--name", default="", help="model name the endpoint serves (default: the folder name)")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--timeout", type=float, default=60.0)
    args = ap.parse_args(argv)
    try:
        chat = LocalChatModel(model_path=args.model, adapter=args.adapter, quantize=args.quantize,
                              max_new_tokens=args.max_new_tokens, timeout_s=args.timeout)
    except SceneMindError as exc:
        raise SystemExit(f"scenemind decoder: error: {exc}") from exc
    name = args.name or args.model.rstrip("/").split("/")[-1]
    # 127.0.0.1 only: this service is for the graph on the same machine, not the network.
    uvicorn.run(create_app(chat, name), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
