"""A local transformers causal LM (+ optional peft adapter, optional 4/8-bit) as a LangChain chat model.

Being a `BaseChatModel` with a real `_stream` is what lets LangGraph's
`stream_mode="messages"` show the tokens as they are generated. Weights are
loaded once per process (`load_causal_lm` is cached); nothing is downloaded.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import PrivateAttr

from state.errors import AdapterMismatch, DecoderConfigError, DecoderUnavailable, ModelNotFound

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

log = logging.getLogger(__name__)
QUANTIZE = ("", "4bit", "8bit")
ADAPTER_META = "scenemind_adapter.json"


def _role(message: BaseMessage) -> str:
    return {"human": "user", "ai": "assistant", "system": "system"}.get(message.type, "user")


def fold_system(chat: list[dict[str, str]]) -> list[dict[str, str]]:
    """The system text moved into the first user turn, for templates without a system role."""
    system = "\n\n".join(m["content"] for m in chat if m["role"] == "system")
    rest = [dict(m) for m in chat if m["role"] != "system"]
    if not system:
        return rest
    first = next((m for m in rest if m["role"] == "user"), None)
    if first is None:
        return [{"role": "user", "content": system}] + rest
    first["content"] = f"{system}\n\n{first['content']}"
    return rest


def render_prompt(tokenizer: Any, messages: list[BaseMessage]) -> tuple[str, bool]:
    """Messages -> (prompt text, whether the tokenizer should add its special tokens).

    The tokenizer's chat template when it has one (its own BOS etc. are in the
    template); a plain "System/User/Assistant:" prompt otherwise. A template that
    refuses a system role (Mistral-Instruct v0.1/v0.2, Gemma raise "roles must
    alternate") gets the system text folded into the first user turn.
    """
    if getattr(tokenizer, "chat_template", None):
        chat = [{"role": _role(m), "content": str(m.content)} for m in messages]
        try:
            return tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True), False
        except Exception as exc:  # noqa: BLE001 - templates raise jinja2's TemplateError or their own errors
            if not any(m["role"] == "system" for m in chat):
                raise DecoderConfigError(f"the model's chat template refuses this conversation: {exc}") from exc
        try:
            return tokenizer.apply_chat_template(fold_system(chat), tokenize=False, add_generation_prompt=True), False
        except Exception as exc:  # noqa: BLE001
            raise DecoderConfigError(f"the model's chat template refuses this conversation even without a "
                                     f"system turn: {exc}") from exc
    parts = [f"{_role(m).capitalize()}: {m.content}" for m in messages]
    return "\n\n".join(parts) + "\n\nAssistant:", True


def prompt_ids(tokenizer: Any, messages: list[BaseMessage]) -> list[int]:
    """The prompt's token ids, exactly as generation feeds them and training learns after them.

    A BERT-style tokenizer closes a sequence with [SEP], its end-of-sequence token: a prompt that
    ended with it would ask the model to go on after the end, so it is left off.
    """
    prompt, special = render_prompt(tokenizer, messages)
    ids = tokenizer(prompt, add_special_tokens=special, return_token_type_ids=False)["input_ids"]
    if special and tokenizer.sep_token_id is not None and ids[-1:] == [tokenizer.sep_token_id]:
        ids = ids[:-1]
    return ids


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


def compute_dtype(cuda: bool | None = None, bf16: bool | None = None):
    """bf16 on a GPU that has it, fp16 on an older GPU (no bf16: V100, T4, consumer Turing), fp32 on the CPU."""
    import torch

    cuda = torch.cuda.is_available() if cuda is None else cuda
    if not cuda:
        return torch.float32
    bf16 = torch.cuda.is_bf16_supported() if bf16 is None else bf16
    return torch.bfloat16 if bf16 else torch.float16


# Encoder families that AutoModelForCausalLM still maps to an LM head (BertLMHeadModel ...): such a
# folder loads without complaint, then fails mid-generation ("index 512 is out of bounds").
ENCODER_TYPES = frozenset({"bert", "roberta", "xlm-roberta", "distilbert", "electra", "deberta", "deberta-v2",
                           "mpnet", "albert", "camembert", "modernbert", "xlm"})


def check_causal_lm(config: Any, folder: Path) -> None:
    """ModelNotFound unless the folder's config describes a generative (causal) LM."""
    archs = list(getattr(config, "architectures", None) or [])
    if archs:
        causal = any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs)
    else:
        causal = config.model_type not in ENCODER_TYPES or bool(getattr(config, "is_decoder", False))
    if not causal or (config.model_type in ENCODER_TYPES and not getattr(config, "is_decoder", False)):
        kind = ", ".join(archs) or config.model_type
        raise ModelNotFound(f"{str(folder)!r} holds an encoder ({kind}), not a causal LM: give a generative "
                            "model (Llama, Mistral, Qwen, Saiga ...); an embedder goes to --embedder")


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
    compute = compute_dtype()
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


def load_base(folder: Path, quantize: str = "", for_training: bool = False, device_map: str | dict | None = None,
              gradient_checkpointing: bool | None = None):
    """The causal LM in `folder`, quantized when asked.

    On a GPU it loads in bf16 (fp16 where the card lacks bf16) with `device_map="auto"`, so a model
    larger than one card spreads over several and offloads the rest to the CPU; on the CPU in fp32.
    Training on a GPU keeps the base in that half precision (LoRA weights stay fp32) and turns on
    gradient checkpointing: a 7B base in fp32 with full activations does not fit a 24 GB card.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    qconfig = quantization_config(quantize)
    try:
        config = AutoConfig.from_pretrained(str(folder))
    except Exception as exc:  # noqa: BLE001
        raise ModelNotFound(f"{str(folder)!r} has no readable config.json ({exc})") from exc
    check_causal_lm(config, folder)
    cuda = torch.cuda.is_available()
    kwargs: dict[str, Any] = {"dtype": compute_dtype(cuda)}
    if device_map is None and cuda:
        device_map = {"": 0} if qconfig is not None and for_training else "auto"
    if qconfig is not None:
        kwargs["quantization_config"] = qconfig
        device_map = device_map or {"": "cpu"}
    if device_map is not None:
        kwargs["device_map"] = device_map
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
    if device_map is None:
        model = model.to(device())
    if gradient_checkpointing is None:  # a quantized base gets it from prepare_model_for_kbit_training
        gradient_checkpointing = for_training and cuda and qconfig is None
    if gradient_checkpointing:  # transformers 5 renamed it activation checkpointing
        getattr(model, "activation_checkpointing_enable", model.gradient_checkpointing_enable)()
        model.enable_input_require_grads()  # LoRA on a frozen base: checkpointed blocks still need a grad path
    return model


def attach_adapter(model, adapter: Path, trainable: bool = False, adapter_name: str = "default"):
    from peft import PeftModel

    try:
        return PeftModel.from_pretrained(model, str(adapter), is_trainable=trainable, adapter_name=adapter_name)
    except (RuntimeError, ValueError, KeyError) as exc:
        # Size mismatches and missing target modules are how peft says "not my base".
        raise AdapterMismatch(f"adapter {str(adapter)!r} does not fit the base model "
                              f"{getattr(model, 'name_or_path', '')!r}: {str(exc).splitlines()[0][:300]} — "
                              "load it onto the base it was trained from") from exc


class SharedBase:
    """One base model per (folder, quantize) in a process, with every adapter loaded onto it by name.

    An interpreter and a decoder on the same 7B base hold it once: each call selects its adapter
    (or none) under the base's lock, since the adapters' layers live inside the base's modules.
    """

    def __init__(self, folder: Path, quantize: str):
        self.tokenizer = load_tokenizer(folder)
        self.model = load_base(folder, quantize)
        self.model.eval()
        self.lock = threading.Lock()
        self.adapters: dict[str, str] = {}  # adapter folder -> its name on the model

    def adapter_name(self, adapter: Path | None) -> str:
        if adapter is None:
            return ""
        with self.lock:
            name = self.adapters.get(str(adapter))
            if name is None:
                name = f"a{len(self.adapters)}"
                if not self.adapters:
                    self.model = attach_adapter(self.model, adapter, adapter_name=name)
                else:
                    load_more_adapter(self.model, adapter, name)
                self.model.eval()
                self.adapters[str(adapter)] = name
            return name

    @contextmanager
    def using(self, name: str) -> Iterator[Any]:
        """The model with adapter `name` active ("" for the bare base); call with the lock held."""
        if not self.adapters:
            yield self.model
        elif name:
            self.model.set_adapter(name)
            yield self.model
        else:
            with self.model.disable_adapter():
                yield self.model


class Loaded(NamedTuple):
    model: Any
    tokenizer: Any
    lock: threading.Lock
    base: SharedBase
    adapter: str


def load_more_adapter(model: Any, adapter: Path, name: str) -> None:
    """Another adapter onto a model that holds one already (the same base, another task)."""
    try:
        model.load_adapter(str(adapter), adapter_name=name)
    except (RuntimeError, ValueError, KeyError) as exc:
        raise AdapterMismatch(f"adapter {str(adapter)!r} does not fit the base model: "
                              f"{str(exc).splitlines()[0][:300]} — load it onto the base it was trained from") from exc


@lru_cache(maxsize=4)
def shared_base(folder: str, quantize: str = "") -> SharedBase:
    return SharedBase(Path(folder), quantize)


def load_causal_lm(path: str, adapter: str = "", quantize: str = "") -> Loaded:
    """(model, tokenizer, lock, base, adapter name) for a folder; each base is built once per process."""
    folder, ad = resolve_model(path, adapter)
    base = shared_base(str(folder), quantize)
    name = base.adapter_name(ad)
    return Loaded(base.model, base.tokenizer, base.lock, base, name)


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
        info: dict[str, Any] = {}
        text = "".join(piece for piece in self._pieces(messages, stop, info, **kwargs))
        message = AIMessage(content=text, response_metadata=dict(info), usage_metadata=info.get("usage"))
        return ChatResult(generations=[ChatGeneration(message=message, generation_info=dict(info))])

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        info: dict[str, Any] = {}
        for piece in self._pieces(messages, stop, info, **kwargs):
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=piece))
            if run_manager:
                run_manager.on_llm_new_token(piece, chunk=chunk)
            yield chunk
        # The last chunk says why the reply ended and what it cost, as an OpenAI server's last chunk does.
        yield ChatGenerationChunk(message=AIMessageChunk(content="", response_metadata=dict(info),
                                                         usage_metadata=info.get("usage")),
                                  generation_info=dict(info))

    def _pieces(self, messages: list[BaseMessage], stop: list[str] | None, info: dict[str, Any],
                **kwargs: Any) -> Iterator[str]:
        """Text pieces as `generate` produces them (in a thread), cut at a stop string.

        `info` gets `finish_reason` (stop: the model ended or a stop string; length: max_new_tokens;
        time: decoder_timeout_s cut it) and `usage` (input/output/total tokens).
        """
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        _, tokenizer, lock, shared, adapter = self._loaded
        ids = torch.tensor([prompt_ids(tokenizer, messages)])
        batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        new_tokens = int(kwargs.get("max_tokens", self.max_new_tokens))
        model = shared.model
        # The prompt and the reply share the model's context window: a prompt past it leaves no room to answer.
        window = getattr(model.config, "max_position_embeddings", None) or self.max_prompt_tokens + new_tokens
        limit = max(1, min(self.max_prompt_tokens, int(window) - new_tokens))
        if batch["input_ids"].shape[1] > limit:  # keep the end: the question and the cue to answer are last
            batch = {k: v[:, -limit:] for k, v in batch.items()}
        batch = {k: v.to(model.device) for k, v in batch.items()}
        prompt_len = int(batch["input_ids"].shape[1])
        streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True,
                                        timeout=self.timeout_s + 30)
        temperature = float(kwargs.get("temperature", self.temperature))
        eos = _eos_ids(model, tokenizer)
        # A reply never holds control tokens (pad, BOS, role markers) other than its end of turn.
        suppress = [i for i in tokenizer.all_special_ids if i not in eos]
        control = _Control(prompt_len)
        options = dict(max_new_tokens=new_tokens, max_time=self.timeout_s,
                       streamer=streamer, pad_token_id=tokenizer.pad_token_id, eos_token_id=sorted(eos),
                       suppress_tokens=suppress or None, do_sample=temperature > 0,
                       stopping_criteria=StoppingCriteriaList([control]),
                       **({"temperature": temperature} if temperature > 0 else {}))
        failure: list[BaseException] = []
        started = time.monotonic()

        def run() -> None:
            try:
                with torch.inference_mode(), shared.using(adapter) as model:
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
                        control.cancel.set()  # generate stops at its next token instead of running to its limit
                        tail = piece[: max(0, len(piece) - (len(produced) - cut))]
                        if tail:
                            yield tail
                        break
                    yield piece
            except Exception as exc:  # queue.Empty: generate stalled past the timeout
                control.cancel.set()
                raise DecoderUnavailable(f"the local model produced nothing for {self.timeout_s:.0f}s "
                                         "(raise decoder_timeout_s or use a smaller model)") from exc
            finally:
                control.cancel.set()
                worker.join()
            if not produced and not failure:
                yield ""  # an empty reply is still a reply (LangChain wants at least one chunk)
        if failure:
            raise DecoderUnavailable(f"the local model failed while generating: {failure[0]}") from failure[0]
        took = time.monotonic() - started
        reason = "stop"
        if not control.stopped and control.generated >= new_tokens:
            reason = "length"
        elif not control.stopped and took >= self.timeout_s:
            reason = "time"
            log.warning("the local model was cut after %.0fs (decoder_timeout_s): raise it for slow CPU generation",
                        took)
        info.update(finish_reason=reason, usage={"input_tokens": prompt_len, "output_tokens": control.generated,
                                                 "total_tokens": prompt_len + control.generated})


class _Control:
    """A stopping criterion the caller can pull (a stop string was met), counting the tokens generated."""

    def __init__(self, prompt_len: int):
        self.prompt_len, self.generated, self.stopped = prompt_len, 0, False
        self.cancel = threading.Event()

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        self.generated = int(input_ids.shape[1]) - self.prompt_len
        stop = self.cancel.is_set()
        self.stopped = self.stopped or stop
        return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)


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
