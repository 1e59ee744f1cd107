"""A local transformers causal LM (+ optional peft adapter, optional 4/8-bit) as a LangChain chat model.

Being a `BaseChatModel` with a real `_stream` is what lets LangGraph's
`stream_mode="messages"` show the tokens as they are generated. Weights are
loaded once per process (`load_causal_lm` is cached); nothing is downloaded.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import PrivateAttr

from state.errors import AdapterMismatch, DecoderConfigError, DecoderUnavailable, ModelNotFound

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

QUANTIZE = ("", "4bit", "8bit")
ADAPTER_META = "scenemind_adapter.json"


def _role(message: BaseMessage) -> str:
    return {"human": "user", "ai": "assistant", "system": "system"}.get(message.type, "user")


def render_prompt(tokenizer: Any, messages: list[BaseMessage]) -> tuple[str, bool]:
    """Messages -> (prompt text, whether the tokenizer should add its special tokens).

    The tokenizer's chat template when it has one (its own BOS etc. are in the
    template); a plain "System/User/Assistant:" prompt otherwise.
    """
    if getattr(tokenizer, "chat_template", None):
        chat = [{"role": _role(m), "content": str(m.content)} for m in messages]
        return tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True), False
    parts = [f"{_role(m).capitalize()}: {m.content}" for m in messages]
    return "\n\n".join(parts) + "\n\nAssistant:", True


def resolve_model(path: str, adapter: str = "") -> tuple[Path, Path | None]:
    """(base folder, adapter folder) for a model folder, or for an adapter folder that names its base."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise ModelNotFound(f"model folder {path!r} does not exist: give a local folder holding a causal LM "
                            "(config.json, weights, tokenizer), e.g. --decoder hf:/models/Qwen2.5-0.5B-Instruct")
    if not adapter and (folder / "adapter_config.json").exists() and not (folder / "config.json").exists():
        adapter, folder = str(folder), _adapter_base(folder)  # an adapter folder alone: its base is recorded in it
    if not (folder / "config.json").exists():
        raise ModelNotFound(f"{str(folder)!r} holds no model (no config.json): give the folder of a causal LM "
                            "saved with save_pretrained")
    ad = None
    if adapter:
        ad = Path(adapter).expanduser()
        if not (ad / "adapter_config.json").exists():
            raise ModelNotFound(f"adapter folder {adapter!r} holds no peft adapter (no adapter_config.json): "
                                "give the --out folder of `scenemind train decoder`")
    return folder.resolve(), ad.resolve() if ad else None


def _adapter_base(adapter: Path) -> Path:
    meta = adapter / ADAPTER_META
    base = json.loads(meta.read_text()).get("base") if meta.exists() else None
    base = base or json.loads((adapter / "adapter_config.json").read_text()).get("base_model_name_or_path")
    if not base:
        raise ModelNotFound(f"adapter {str(adapter)!r} does not name its base model: pass the base as the model path")
    return Path(base)


def device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def quantization_config(quantize: str):
    """A BitsAndBytesConfig for 4bit (NF4, the QLoRA recipe) or 8bit; None for full precision."""
    if quantize not in QUANTIZE:
        raise DecoderConfigError(f"quantize={quantize!r} is not one of 4bit, 8bit (or empty for full precision)")
    if not quantize:
        return None
    import torch
    from transformers import BitsAndBytesConfig
    from transformers.utils import is_bitsandbytes_available

    try:
        import bitsandbytes  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - any failure to import means it cannot run here
        raise DecoderConfigError(f"quantize={quantize} needs bitsandbytes, which cannot run here ({exc}): "
                                 "pip install 'bitsandbytes>=0.50', or drop quantize") from exc
    if not is_bitsandbytes_available():
        raise DecoderConfigError(f"quantize={quantize} needs bitsandbytes, which transformers cannot use on this "
                                 "machine: drop quantize or install a bitsandbytes build for this device")
    if quantize == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    compute = torch.bfloat16 if torch.cuda.is_available() else torch.float32
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute)


def load_tokenizer(folder: Path):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
    except Exception as exc:  # noqa: BLE001 - transformers raises many kinds for a folder without a tokenizer
        raise ModelNotFound(f"{str(folder)!r} holds no usable tokenizer ({type(exc).__name__}): save the "
                            "tokenizer next to the model (tokenizer.save_pretrained)") from exc
    if tokenizer.eos_token is None and tokenizer.sep_token is not None:
        tokenizer.eos_token = tokenizer.sep_token  # a BERT-style tokenizer ends a sequence with [SEP]
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return tokenizer


def load_base(folder: Path, quantize: str = "", for_training: bool = False):
    """The causal LM in `folder`, on the GPU when there is one, quantized when asked."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    qconfig = quantization_config(quantize)
    try:
        config = AutoConfig.from_pretrained(str(folder))
    except Exception as exc:  # noqa: BLE001
        raise ModelNotFound(f"{str(folder)!r} has no readable config.json ({exc})") from exc
    kwargs: dict[str, Any] = {}
    if qconfig is not None:
        kwargs["quantization_config"] = qconfig
        kwargs["device_map"] = {"": 0} if torch.cuda.is_available() else {"": "cpu"}
    elif torch.cuda.is_available():
        kwargs["dtype"] = torch.bfloat16 if not for_training else torch.float32
    try:
        model = AutoModelForCausalLM.from_pretrained(str(folder), **kwargs)
    except ValueError as exc:
        if "Unrecognized configuration class" in str(exc):
            raise ModelNotFound(f"{str(folder)!r} holds a {config.model_type!r} model, not a causal LM: give a "
                                "generative model (Llama, Mistral, Qwen, Saiga ...)") from exc
        raise ModelNotFound(f"cannot load the model in {str(folder)!r}: {exc}") from exc
    except OSError as exc:
        raise ModelNotFound(f"{str(folder)!r} holds no model weights ({exc}): save the model with "
                            "save_pretrained") from exc
    if qconfig is None:
        model = model.to(device())
    return model


def attach_adapter(model, adapter: Path, trainable: bool = False):
    from peft import PeftModel

    try:
        return PeftModel.from_pretrained(model, str(adapter), is_trainable=trainable)
    except (RuntimeError, ValueError, KeyError) as exc:
        # Size mismatches and missing target modules are how peft says "not my base".
        raise AdapterMismatch(f"adapter {str(adapter)!r} does not fit the base model "
                              f"{getattr(model, 'name_or_path', '')!r}: {str(exc).splitlines()[0][:300]} — "
                              "load it onto the base it was trained from") from exc


@lru_cache(maxsize=4)
def load_causal_lm(path: str, adapter: str = "", quantize: str = ""):
    """(model, tokenizer, lock) for a folder, built once per process."""
    folder, ad = resolve_model(path, adapter)
    tokenizer = load_tokenizer(folder)
    model = load_base(folder, quantize)
    if ad is not None:
        model = attach_adapter(model, ad)
    model.eval()
    return model, tokenizer, threading.Lock()


class LocalChatModel(BaseChatModel):
    """A local causal LM folder as a chat model: greedy by default, bounded by tokens and time."""

    model_path: str
    adapter: str = ""
    quantize: str = ""
    max_new_tokens: int = 256
    timeout_s: float = 60.0
    temperature: float = 0.0
    max_prompt_tokens: int = 3072

    _loaded: Any = PrivateAttr(default=None)

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        # Loaded here, not in a validator: pydantic would wrap our domain errors in a ValidationError.
        self._loaded = load_causal_lm(self.model_path, self.adapter, self.quantize)

    @property
    def _llm_type(self) -> str:
        return "scenemind-local"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_path": self.model_path, "adapter": self.adapter, "quantize": self.quantize}

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        text = "".join(piece for piece in self._pieces(messages, stop, **kwargs))
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        for piece in self._pieces(messages, stop, **kwargs):
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=piece))
            if run_manager:
                run_manager.on_llm_new_token(piece, chunk=chunk)
            yield chunk

    def _pieces(self, messages: list[BaseMessage], stop: list[str] | None, **kwargs: Any) -> Iterator[str]:
        """Text pieces as `generate` produces them (in a thread), cut at a stop string."""
        import torch
        from transformers import TextIteratorStreamer

        model, tokenizer, lock = self._loaded
        prompt, special = render_prompt(tokenizer, messages)
        batch = tokenizer(prompt, return_tensors="pt", add_special_tokens=special, return_token_type_ids=False)
        new_tokens = int(kwargs.get("max_tokens", self.max_new_tokens))
        # The prompt and the reply share the model's context window: a prompt past it leaves no room to answer.
        window = getattr(model.config, "max_position_embeddings", None) or self.max_prompt_tokens + new_tokens
        limit = max(1, min(self.max_prompt_tokens, int(window) - new_tokens))
        if batch["input_ids"].shape[1] > limit:  # keep the end: the question and the cue to answer are last
            batch = {k: v[:, -limit:] for k, v in batch.items()}
        batch = {k: v.to(model.device) for k, v in batch.items()}
        streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True,
                                        timeout=self.timeout_s + 30)
        temperature = float(kwargs.get("temperature", self.temperature))
        eos = _eos_ids(model, tokenizer)
        # A reply never holds control tokens (pad, BOS, role markers) other than its end of turn.
        suppress = [i for i in tokenizer.all_special_ids if i not in eos]
        options = dict(max_new_tokens=new_tokens, max_time=self.timeout_s,
                       streamer=streamer, pad_token_id=tokenizer.pad_token_id, eos_token_id=sorted(eos),
                       suppress_tokens=suppress or None, do_sample=temperature > 0,
                       **({"temperature": temperature} if temperature > 0 else {}))
        failure: list[BaseException] = []

        def run() -> None:
            try:
                with torch.inference_mode():
                    model.generate(**batch, **options)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread below
                failure.append(exc)
                streamer.on_finalized_text("", stream_end=True)

        with lock:  # one generation per model at a time: torch modules are not re-entrant
            worker = threading.Thread(target=run, daemon=True)
            worker.start()
            produced = ""
            try:
                for piece in streamer:
                    if not piece:
                        continue
                    produced += piece
                    cut = _stop_at(produced, stop)
                    if cut is not None:
                        tail = piece[: max(0, len(piece) - (len(produced) - cut))]
                        if tail:
                            yield tail
                        break
                    yield piece
            except Exception as exc:  # queue.Empty: generate stalled past the timeout
                raise DecoderUnavailable(f"the local model produced nothing for {self.timeout_s:.0f}s "
                                         "(raise decoder_timeout_s or use a smaller model)") from exc
            finally:
                worker.join()
            if not produced and not failure:
                yield ""  # an empty reply is still a reply (LangChain wants at least one chunk)
        if failure:
            raise DecoderUnavailable(f"the local model failed while generating: {failure[0]}") from failure[0]


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    """End-of-turn ids: the model's generation config (Llama 3 lists several) and the tokenizer's."""
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = set(configured if isinstance(configured, list) else [configured] if configured is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


def _stop_at(text: str, stop: list[str] | None) -> int | None:
    hits = [text.find(s) for s in stop or [] if s and s in text]
    return min(hits) if hits else None
