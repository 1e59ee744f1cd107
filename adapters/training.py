"""LoRA / QLoRA fine-tuning (peft) of a local causal LM from jsonl, and tiny models built from scratch.

Two tasks share one loop: `decoder` learns (question + scenes -> answer text)
with exactly the prompt the `hf:` decoder sends; `interpreter` learns
(text -> scene JSON) with exactly the prompt `build_scene` sends. The loss
is on the target tokens only. Adapters are saved as safetensors with a
`scenemind_adapter.json` that names the base, so `--decoder hf:<adapter dir>`
finds its base by itself.
"""

from __future__ import annotations

import json
import math
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from adapters.chat_models import (
    ADAPTER_META,
    attach_adapter,
    device,
    load_base,
    load_tokenizer,
    resolve_model,
)
from adapters.chat_models import prompt_ids as encode_prompt  # the local name prompt_ids is the ids themselves
from state.errors import DecoderConfigError, SceneFileError
from state.models import Formula, Recalled

Task = Literal["decoder", "interpreter"]


@dataclass
class Example:
    messages: list  # LangChain messages: the prompt
    target: str


@dataclass
class TrainReport:
    task: str
    base: str
    out: str
    examples: int
    steps: int
    first_loss: float
    final_loss: float
    train_s: float
    qlora: bool
    device: str
    # What the base's 4-bit layers really are (quant type, double quantization, compute dtype); None unquantized.
    quantization: dict[str, Any] | None = None


# ---------- data ----------

def _lines(path: str) -> list[tuple[int, dict]]:
    file = Path(path)
    if not file.is_file():
        raise SceneFileError(path, None, "no such file: give a .jsonl file (see README, 'Decoders and training')")
    rows = []
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise SceneFileError(path, None, f"not UTF-8 text ({exc.reason})") from exc
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SceneFileError(path, n, f"not a JSON object ({exc.msg})") from exc
        if not isinstance(row, dict):
            raise SceneFileError(path, n, "each line must be a JSON object")
        rows.append((n, row))
    if not rows:
        raise SceneFileError(path, None, "the file holds no examples")
    return rows


def read_decoder_examples(path: str) -> list[Example]:
    """`{"question", "scenes": [{"id", "text", "title"?}], "formulas"?: [{"chain", "summary"}], "answer"}` per line."""
    from adapters.decoders import answer_messages

    out = []
    for n, row in _lines(path):
        try:
            question, answer = row["question"], row["answer"]
            scenes = [Recalled(id=str(s["id"]), text=s["text"], title=s.get("title")) for s in row["scenes"]]
            formulas = [Formula(id=f"f{i}", chain=list(f["chain"]), summary=f.get("summary", ""))
                        for i, f in enumerate(row.get("formulas") or [])]
        except (KeyError, TypeError) as exc:
            raise SceneFileError(path, n, f"a decoder example needs question, scenes [{{id, text}}] and answer "
                                          f"(missing or wrong: {exc})") from exc
        if not isinstance(question, str) or not isinstance(answer, str):
            # str(None) would train the model to answer "None".
            raise SceneFileError(path, n, f"question and answer must be text, got answer {answer!r}")
        if not question.strip() or not answer.strip():
            raise SceneFileError(path, n, "question and answer must not be empty")
        out.append(Example(answer_messages(question, scenes, formulas), str(answer).strip()))
    return out


def read_interpreter_examples(path: str) -> list[Example]:
    """`{"text", "scene": {"components": [{"text", "kind"}], "couplings": [{"source", "target"}]}}` per line."""
    from adapters.scene_interpreter import interpreter_messages, scene_json, validate_draft
    from state.errors import InterpreterOutputInvalid

    out = []
    for n, row in _lines(path):
        if not isinstance(row.get("text"), str) or not row["text"].strip() or not isinstance(row.get("scene"), dict):
            raise SceneFileError(path, n, "an interpreter example needs text and scene {components, couplings}")
        try:
            draft = validate_draft(row["scene"])
        except InterpreterOutputInvalid as exc:
            raise SceneFileError(path, n, f"scene does not fit the schema: {exc}") from exc
        out.append(Example(interpreter_messages(row["text"]), scene_json(draft)))
    return out


def encode_example(tokenizer: Any, example: Example, max_length: int) -> tuple[list[int], list[int]]:
    """(input ids, labels): the prompt as the backend renders it, the loss on the target (+ EOS) only."""
    prompt_ids = encode_prompt(tokenizer, example.messages)  # as the hf: decoder feeds it
    target_ids = tokenizer(" " + example.target, add_special_tokens=False, return_token_type_ids=False)["input_ids"]
    if tokenizer.eos_token_id is not None:
        target_ids = target_ids + [tokenizer.eos_token_id]
    target_ids = target_ids[:max_length // 2]
    prompt_ids = prompt_ids[-(max_length - len(target_ids)):]  # keep the end of the prompt, like generation does
    return prompt_ids + target_ids, [-100] * len(prompt_ids) + target_ids


# ---------- LoRA / QLoRA ----------

def train_adapter(task: Task, data: str, base: str, out: str, *, qlora: bool = False, epochs: int = 3,
                  lr: float = 2e-4, rank: int = 8, alpha: int = 16, max_length: int = 1024, seed: int = 0,
                  progress: bool = True, max_steps: int | None = None) -> TrainReport:
    """Fine-tune a LoRA (QLoRA with `qlora`: 4-bit NF4 base) for `task` from a jsonl file; save to `out`."""
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from tqdm import tqdm

    if task not in ("decoder", "interpreter"):
        raise DecoderConfigError(f"unknown training task {task!r}: decoder or interpreter")
    if epochs < 1 or lr <= 0:
        raise DecoderConfigError("epochs must be >= 1 and lr > 0")
    examples = read_decoder_examples(data) if task == "decoder" else read_interpreter_examples(data)
    # `base` may be an adapter folder of an earlier run: training continues that adapter on its base.
    folder, earlier = resolve_model(base)
    tokenizer = load_tokenizer(folder)
    torch.manual_seed(seed)
    random.seed(seed)
    model = load_base(folder, "4bit" if qlora else "", for_training=True)
    quantization = quantization_of(model)
    if qlora:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=torch.cuda.is_available())
    if earlier is not None:
        model = attach_adapter(model, earlier, trainable=True)
    else:
        config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.05, target_modules="all-linear",
                            task_type="CAUSAL_LM")
        model = get_peft_model(model, config)
    model.train()
    encoded = [encode_example(tokenizer, e, max_length) for e in examples]
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    steps = epochs * len(encoded) if max_steps is None else max_steps
    losses: list[float] = []
    start = time.perf_counter()
    dev = model.device if hasattr(model, "device") else device()
    with tqdm(total=steps, desc=f"train {task}", unit="step", file=sys.stderr, disable=not progress) as bar:
        order: list[int] = []
        for _ in range(steps):
            if not order:
                order = random.sample(range(len(encoded)), len(encoded))
            ids, labels = encoded[order.pop()]
            batch_ids = torch.tensor([ids], device=dev)
            loss = model(input_ids=batch_ids, attention_mask=torch.ones_like(batch_ids),
                         labels=torch.tensor([labels], device=dev)).loss
            if not math.isfinite(loss.item()):
                raise DecoderConfigError(f"the loss became {loss.item()}: lower --lr (now {lr})")
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
            bar.set_postfix(loss=f"{sum(losses[-10:]) / len(losses[-10:]):.3f}")
            bar.update()
    took = time.perf_counter() - start
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir), safe_serialization=True)  # adapter_model.safetensors
    report = TrainReport(task=task, base=str(folder), out=str(out_dir.resolve()), examples=len(examples),
                         steps=steps, first_loss=round(losses[0], 4),
                         final_loss=round(sum(losses[-10:]) / len(losses[-10:]), 4), train_s=round(took, 1),
                         qlora=qlora, device=str(dev), quantization=quantization)
    (out_dir / ADAPTER_META).write_text(json.dumps({**asdict(report), "kind": task}, indent=2))
    return report


def quantization_of(model: Any) -> dict[str, Any] | None:
    """How the first 4-bit layer of `model` is stored (read from bitsandbytes' quant state), or None."""
    for module in model.modules():
        state = getattr(getattr(module, "weight", None), "quant_state", None)
        if state is not None:
            return {"layer": type(module).__name__, "quant_type": state.quant_type, "double_quant": bool(state.nested),
                    "compute_dtype": str(getattr(module, "compute_dtype", None)).removeprefix("torch.")}
    return None


# ---------- tiny models from scratch (tests, `--base tiny`) ----------

CHAT_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}</s>{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>{% endif %}")


def train_tokenizer(texts: list[str], folder: str | Path, vocab_size: int = 4096, chat_template: str | None = None):
    """A byte-level BPE trained on `texts` with the `tokenizers` library, saved and reloaded by from_pretrained."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<pad>", "<s>", "</s>", "<|system|>", "<|user|>", "<|assistant|>"]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   additional_special_tokens=specials[3:], clean_up_tokenization_spaces=False)
    if chat_template:
        fast.chat_template = chat_template
    Path(folder).mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(folder))
    return AutoTokenizer.from_pretrained(str(folder))


def tiny_causal_lm(tokenizer: Any, hidden: int = 64, layers: int = 2, heads: int = 4, max_positions: int = 2048,
                   seed: int = 0, init_std: float = 0.02):
    """A small Llama-architecture LM sized to `tokenizer`, randomly initialised.

    With tied embeddings of std 0.02 a 64-d model can barely raise a logit; a
    LoRA on top cannot learn anything. `init_std` ~0.2 gives a random base
    that LoRA can steer, like a pretrained one.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=hidden * 2,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                         max_position_embeddings=max_positions, tie_word_embeddings=True, initializer_range=init_std,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    return LlamaForCausalLM(config)
