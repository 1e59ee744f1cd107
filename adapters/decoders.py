"""Output decoders: text from the field, each answer citing the scenes it rests on.

- `extractive` (default, no model): the sentences of the woken scenes that best
  match the question, at most one per scene first so a multi-hop answer shows
  each hop, each followed by the id of the scene it came from.
- `hf:<folder>`: a local causal LM (+ peft adapter, + 4/8-bit) — `adapters.chat_models`.
- `openai:<base_url>`: any OpenAI-compatible chat endpoint through langchain-openai.
- `field:<folder>`: text straight from the field vector — `adapters.field_decoder`.

Model decoders are LangChain chat models, so LangGraph's `messages` stream
mode shows their tokens. They are built once per process per setting.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol

import numpy as np
from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage

from adapters.embedder import Embedder
from adapters.lexicon import split_clauses
from state.errors import DecoderConfigError, DecoderUnavailable, SceneMindError
from state.models import Formula, Recalled

MMR_REDUNDANCY = 0.5
SENTENCE_CACHE = 20_000  # scenes whose embedded sentences the extractive decoder keeps
SCENE_WEIGHT = 0.5
CHAIN_BONUS = 0.2


@dataclass
class Decoded:
    answer: str
    citations: list[str]


class ExtractiveDecoder:
    name = "extractive"

    def __init__(self, embedder: Embedder, sentences: int = 3):
        self.embedder, self.sentences = embedder, sentences
        self._sentences: dict[str, tuple[list[str], np.ndarray]] = {}  # scene id -> its sentences, embedded once

    def _split(self, scenes: list[Recalled]) -> None:
        missing = [s for s in scenes if s.id not in self._sentences]
        if not missing:
            return
        if len(self._sentences) > SENTENCE_CACHE:
            self._sentences.clear()
        parts = {s.id: split_clauses(s.text) or [s.text] for s in missing}
        vectors = self.embedder.embed([sent for sents in parts.values() for sent in sents])  # one batch
        at = 0
        for sid, sents in parts.items():
            self._sentences[sid] = (sents, vectors[at : at + len(sents)])
            at += len(sents)

    def decode(self, question: str, field: np.ndarray, scenes: list[Recalled], formulas: list[Formula]) -> Decoded:
        if not scenes:
            return Decoded("I found no scene in memory that resonates with this question.", [])
        self._split(scenes)
        candidates = [(s.id, sent) for s in scenes for sent in self._sentences[s.id][0]]
        vectors = np.concatenate([self._sentences[s.id][1] for s in scenes])
        rank = {s.id: n for n, s in enumerate(scenes)}
        # Resonance scores live on an open scale: only their spread among these scenes matters here.
        low, high = min(s.score for s in scenes), max(s.score for s in scenes)
        strength = {s.id: (s.score - low) / (high - low) if high > low else 1.0 for s in scenes}
        # The strongest formula is the linked path through the field: its scenes speak first.
        chain = set(formulas[0].chain) if formulas else set()
        fit = (vectors @ field
               + SCENE_WEIGHT * np.array([strength[sid] for sid, _ in candidates])
               + CHAIN_BONUS * np.array([sid in chain for sid, _ in candidates], dtype=np.float32))
        chosen: list[int] = []

        def pick(allowed: np.ndarray) -> None:
            # Maximal marginal relevance: a sentence that repeats a chosen one adds little.
            redundancy = (vectors @ vectors[chosen].T).max(axis=1) if chosen else np.zeros(len(candidates))
            score = np.where(allowed, fit - MMR_REDUNDANCY * redundancy, -np.inf)
            score[chosen] = -np.inf
            if np.isfinite(score.max()):
                chosen.append(int(np.argmax(score)))

        # Each of the strongest scenes speaks once, so a multi-hop answer shows every hop ...
        for scene in scenes[: self.sentences]:
            pick(np.array([sid == scene.id for sid, _ in candidates]))
        # ... then the best remaining sentences, from any scene, fill the answer.
        while len(chosen) < min(self.sentences, len(candidates)):
            pick(np.ones(len(candidates), dtype=bool))
        chosen.sort(key=lambda i: (rank[candidates[i][0]], i))
        answer = " ".join(f"{candidates[i][1]} [{candidates[i][0]}]" for i in chosen)
        citations = list(dict.fromkeys(candidates[i][0] for i in chosen))
        return Decoded(answer, citations)


ANSWER_SYSTEM = ("You answer questions from the scenes you are given and nothing else. After each fact, cite "
                 "the id of the scene it comes from in square brackets, e.g. [3f2a9c]. If the scenes do not hold "
                 "the answer, say so.")
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
    lines += ["", "Answer the question in one to three sentences and cite the scene ids you use in square brackets."]
    return [SystemMessage(ANSWER_SYSTEM), HumanMessage("\n".join(lines))]


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

    def decode(self, question: str, field: np.ndarray, scenes: list[Recalled],
               formulas: list[Formula]) -> Decoded: ...


class ChatDecoder:
    """Any LangChain chat model as a decoder: prompt with the scenes, parse the ids it cites."""

    def __init__(self, chat: Any, name: str):
        self.chat, self.name = chat, name

    def decode(self, question: str, field: np.ndarray, scenes: list[Recalled], formulas: list[Formula]) -> Decoded:
        if not scenes:
            return Decoded("I found no scene in memory that resonates with this question.", [])
        message = invoke_chat(self.chat, answer_messages(question, scenes, formulas), self.name)
        text = message.strip()
        known = [s.id for s in scenes]
        # Fall back to the scenes the prompt carried when the model cites none we know.
        return Decoded(text or "(the decoder produced no text)", cited_ids(text, known) or known)


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
    return ChatOpenAI(base_url=base_url, model=model, api_key=key, max_tokens=max_new_tokens, timeout=timeout_s,
                      max_retries=0, temperature=0)


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


@lru_cache(maxsize=8)
def _extractive(embedder: Embedder, sentences: int) -> ExtractiveDecoder:
    return ExtractiveDecoder(embedder, sentences)  # one per process, so its sentence cache lives on


def load_decoder(spec: str, embedder: Embedder, sentences: int, *, model: str = "", adapter: str = "",
                 quantize: str = "", max_new_tokens: int = 256, timeout_s: float = 60.0) -> Decoder:
    """The decoder for `spec`; model decoders are built once per process per setting."""
    spec = (spec or "extractive").strip()
    if spec == "extractive":
        return _extractive(embedder, sentences)
    if ":" not in spec or not spec.partition(":")[2]:
        raise DecoderConfigError(f"decoder {spec!r} is not available: use extractive, hf:/path/to/model, "
                                 "openai:http://host:port/v1 or field:/path/to/field-decoder")
    embedder_spec = str(embedder.path) if embedder.name != "all-MiniLM-L6-v2" else embedder.name
    return _model_decoder(spec, model, adapter, quantize, int(max_new_tokens), float(timeout_s), embedder_spec)
