"""Output decoders: a short answer from the field, with the chain of evidence it rests on.

- `extractive` (default, no model): the short answer and evidence chain that
  `adapters.answer_reader` reads from the field (or "not in memory" and the closest scenes).
- `hf:<folder>`: a local causal LM (+ peft adapter, + 4/8-bit) — `adapters.chat_models`.
- `openai:<base_url>`: any OpenAI-compatible chat endpoint through langchain-openai.
- `field:<folder>`: text straight from the field vector — `adapters.field_decoder`.

Model decoders are LangChain chat models, so LangGraph's `messages` stream
mode shows their tokens. They are built once per process per setting.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Protocol

import numpy as np
from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage

from adapters.answer_reader import AnswerReader, Reading
from adapters.embedder import Embedder
from state.errors import DecoderConfigError, DecoderUnavailable, SceneMindError
from state.models import Evidence, Formula, Recalled


@dataclass
class Decoded:
    answer: str
    citations: list[str]
    evidence: list[Evidence] = field(default_factory=list)


def reading_decoded(reading: Reading) -> Decoded:
    """The extractive reading as a decoder's output: its answer, its evidence, the scenes it cites."""
    return Decoded(reading.answer, list(dict.fromkeys(e.scene_id for e in reading.evidence)), reading.evidence)


class ExtractiveDecoder:
    """The default: the short answer and evidence chain the reader found, no model."""

    name = "extractive"

    def decode(self, question: str, field: np.ndarray, scenes: list[Recalled], formulas: list[Formula],
               reading: Reading | None = None) -> Decoded:
        return reading_decoded(reading or AnswerReader().read(question, scenes))


ANSWER_SYSTEM = ("You answer questions from the scenes you are given and nothing else. Reply in this shape:\n"
                 "Answer: <the short answer: a name, a date, a number, a place, yes or no>\n"
                 "Evidence:\n1. [scene id] <the sentence of that scene that supports it>\n"
                 "2. [scene id] <the next hop, if the answer needs one>\n"
                 "If the scenes do not hold the answer, reply \"Answer: not in memory\".")
SCENE_CHARS = 700  # a scene's text in the prompt is cut here so a few scenes fit a small model's window


def answer_messages(question: str, scenes: list[Recalled], formulas: list[Formula]) -> list[BaseMessage]:
    """The prompt of every model decoder (and of decoder training): question, formulas, scenes with ids."""
    lines = [f"Question: {question.strip()}", ""]
    if formulas:
        lines.append("Formulas (linked scenes):")
        lines += [f"- {' -> '.join(f.chain)}: {f.summary[:SCENE_CHARS]}" for f in formulas[:3]]
        lines.append("")
    lines.append("Scenes:")
    for s in scenes:
        title = f"{s.title}: " if s.title else ""
        lines.append(f"[{s.id}] {title}{s.text[:SCENE_CHARS]}")
    lines += ["", "Reply with the short answer line, then the numbered evidence, each citing its scene id in "
                  "square brackets."]
    return [SystemMessage(ANSWER_SYSTEM), HumanMessage("\n".join(lines))]


_ANSWER_LINE = re.compile(r"^\s*(?:\*\*)?(?:answer|ответ)(?:\*\*)?\s*[:：]\s*(.+)$", re.IGNORECASE | re.MULTILINE)


def parse_reply(text: str, scenes: list[Recalled], fallback: Reading | None) -> Decoded:
    """A model's reply in the answer shape: the short answer line, then evidence lines citing scene ids.

    A reply without an "Answer:" line is the answer as a whole; when it cites no scene
    it was shown, the extractive reading's evidence stands in, so every answer shows its support.
    """
    text = text.strip()
    m = _ANSWER_LINE.search(text)
    # A reply that ignores the shape is kept whole: its words are still the model's answer.
    answer = (_BRACKETS.sub("", m.group(1)).strip(" .") if m else text) or "(the decoder produced no text)"
    by_id = {s.id: s for s in scenes}
    evidence: list[Evidence] = []
    for line in text.splitlines():
        for sid in cited_ids(line, list(by_id)):
            if any(e.scene_id == sid for e in evidence):
                continue
            said = re.sub(r"^\s*(?:\d+[.)]|[-*•])\s*", "", _BRACKETS.sub("", line)).strip()
            if said.lower().startswith(("answer", "ответ")):
                said = by_id[sid].text[:SCENE_CHARS]
            evidence.append(Evidence(scene_id=sid, title=by_id[sid].title, text=said or by_id[sid].text[:SCENE_CHARS],
                                     hop=len(evidence) + 1, role="answer"))
    if evidence:
        evidence[:-1] = [e.model_copy(update={"role": "bridge"}) for e in evidence[:-1]]
    elif fallback is not None:
        evidence = list(fallback.evidence)
    citations = [e.scene_id for e in evidence] or [s.id for s in scenes]
    return Decoded(answer, list(dict.fromkeys(citations)), evidence)


_BRACKETS = re.compile(r"\[([^\[\]]{1,400})\]")


def cited_ids(text: str, known: list[str]) -> list[str]:
    """Scene ids the text cites in brackets ([a], [a, b], [a][b]), in order, only ids the prompt carried."""
    allowed = set(known)
    out: list[str] = []
    for group in _BRACKETS.findall(text):
        for sid in re.split(r"[,;\s]+", group):
            sid = sid.strip().strip("'\"")
            if sid in allowed and sid not in out:
                out.append(sid)
    return out


class Decoder(Protocol):
    name: str

    def decode(self, question: str, field: np.ndarray, scenes: list[Recalled], formulas: list[Formula],
               reading: Reading | None = None) -> Decoded: ...


class ChatDecoder:
    """Any LangChain chat model as a decoder: prompt with the scenes, parse the ids it cites."""

    def __init__(self, chat: Any, name: str):
        self.chat, self.name = chat, name

    def decode(self, question: str, field: np.ndarray, scenes: list[Recalled], formulas: list[Formula],
               reading: Reading | None = None) -> Decoded:
        if not scenes:
            return reading_decoded(reading or AnswerReader().read(question, scenes))
        message = invoke_chat(self.chat, answer_messages(question, scenes, formulas), self.name)
        return parse_reply(message, scenes, reading)


def invoke_chat(chat: Any, messages: list[BaseMessage], name: str) -> str:
    """One chat call with the client's failures turned into one domain error that says what to do."""
    import openai

    try:
        reply = chat.invoke(messages)
    except SceneMindError:
        raise
    except openai.APITimeoutError as exc:
        raise DecoderUnavailable(f"decoder {name} did not answer in time: raise decoder_timeout_s "
                                 "or check the server") from exc
    except openai.APIConnectionError as exc:
        raise DecoderUnavailable(f"decoder {name} is unreachable ({exc}): start the server or fix --decoder") from exc
    except openai.APIStatusError as exc:
        raise DecoderUnavailable(f"decoder {name} answered HTTP {exc.status_code}: "
                                 f"{str(exc)[:200]} — check the model name (--decoder-model) and the server") from exc
    except (openai.APIError, ValueError, TypeError, KeyError, AttributeError) as exc:
        # The endpoint answered, but not with an OpenAI chat completion.
        raise DecoderUnavailable(f"decoder {name} answered something that is not an OpenAI chat completion "
                                 f"({type(exc).__name__}: {str(exc)[:200]}): is it an OpenAI-compatible "
                                 "/v1 endpoint?") from exc
    content = getattr(reply, "content", None)
    if not isinstance(content, str):
        raise DecoderUnavailable(f"decoder {name} returned no text content: is it an OpenAI-compatible endpoint?")
    return content


def openai_chat(base_url: str, model: str = "", max_new_tokens: int = 256, timeout_s: float = 60.0):
    """A ChatOpenAI for an OpenAI-compatible endpoint; without a model name, the first one it lists."""
    import openai
    from langchain_openai import ChatOpenAI

    if not re.match(r"^https?://", base_url):
        raise DecoderConfigError(f"openai decoder needs an http(s) base URL, got {base_url!r}: "
                                 "e.g. --decoder openai:http://127.0.0.1:8000/v1")
    key = os.environ.get("SCENEMIND_DECODER_API_KEY") or os.environ.get("OPENAI_API_KEY") or "not-needed"
    if not model:
        try:
            listed = openai.OpenAI(base_url=base_url, api_key=key, timeout=timeout_s, max_retries=0).models.list()
            model = next(iter(listed)).id
        except StopIteration as exc:
            raise DecoderUnavailable(f"the endpoint {base_url} lists no model: pass --decoder-model NAME") from exc
        except openai.APIConnectionError as exc:
            raise DecoderUnavailable(f"decoder endpoint {base_url} is unreachable ({exc}): start the server "
                                     "or fix --decoder") from exc
        except (openai.APIError, ValueError, TypeError, KeyError, AttributeError) as exc:
            raise DecoderUnavailable(f"the endpoint {base_url} did not list its models ({type(exc).__name__}): "
                                     "pass --decoder-model NAME, or check it is an OpenAI-compatible /v1 URL") from exc
    from adapters.endpoint_deadline import bounded_client

    # timeout_s bounds the whole call: httpx alone bounds each read, and a slow stream never trips it.
    return ChatOpenAI(base_url=base_url, model=model, api_key=key, max_tokens=max_new_tokens, timeout=timeout_s,
                      max_retries=0, temperature=0, http_client=bounded_client(timeout_s))


@lru_cache(maxsize=8)
def _model_decoder(spec: str, model: str, adapter: str, quantize: str, max_new_tokens: int,
                   timeout_s: float, embedder_name: str) -> Any:
    kind, _, target = spec.partition(":")
    if kind == "hf":
        from adapters.chat_models import LocalChatModel

        chat = LocalChatModel(model_path=target, adapter=adapter, quantize=quantize,
                              max_new_tokens=max_new_tokens, timeout_s=timeout_s)
        return ChatDecoder(chat, spec)
    if kind == "openai":
        return ChatDecoder(openai_chat(target, model, max_new_tokens, timeout_s), spec)
    if kind == "field":
        from adapters.embedder import load_embedder
        from adapters.field_decoder import FieldTextDecoder

        return FieldTextDecoder(target, load_embedder(embedder_name), max_new_tokens=min(max_new_tokens, 96))
    raise DecoderConfigError(f"decoder {spec!r} is not available: use extractive, hf:/path/to/model, "
                             "openai:http://host:port/v1 or field:/path/to/field-decoder")


_EXTRACTIVE = ExtractiveDecoder()


def load_decoder(spec: str, embedder: Embedder, *, model: str = "", adapter: str = "",
                 quantize: str = "", max_new_tokens: int = 256, timeout_s: float = 60.0) -> Decoder:
    """The decoder for `spec`; model decoders are built once per process per setting."""
    spec = (spec or "extractive").strip()
    if spec == "extractive":
        return _EXTRACTIVE
    if ":" not in spec or not spec.partition(":")[2]:
        raise DecoderConfigError(f"decoder {spec!r} is not available: use extractive, hf:/path/to/model, "
                                 "openai:http://host:port/v1 or field:/path/to/field-decoder")
    embedder_spec = str(embedder.path) if embedder.name != "all-MiniLM-L6-v2" else embedder.name
    return _model_decoder(spec, model, adapter, quantize, int(max_new_tokens), float(timeout_s), embedder_spec)
