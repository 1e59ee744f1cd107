"""Field decoder: text straight from a vector of the shared space.

A projector maps a scene vector (384-d MiniLM) to a few soft-prefix
embeddings that a causal LM reads before it writes. Two ways to get the LM:

- `base="tiny"`: a byte-level BPE tokenizer trained on the corpus with the
  `tokenizers` library and a small Llama trained from scratch, with the
  projector (fits a CPU in minutes);
- `base=<folder>`: a local causal LM, frozen, with a LoRA adapter trained
  together with the projector.

With `prototypes=k` the decoder is a retrieve-and-edit model (Guu et al.,
2018): besides the vector it reads the k sentences of memory nearest to it
and learns to edit them toward what the vector says, copying the names it
cannot spell from 384 numbers. At training time a sentence's prototypes are
its nearest *other* training sentences; in the graph they are the field's
strongest scenes.

Decoding samples a few candidates and keeps the one whose re-embedding lies
closest to the vector: the embedder is the judge of what the vector "says".
Prototypes are never candidates themselves: what comes out is generated.
Saved as safetensors (+ JSON); `load_field_decoder` builds it once per process.
"""

from __future__ import annotations

import json
import random
import sys
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from adapters.decoders import Decoded
from adapters.lexicon import normalise, split_clauses
from state.errors import DecoderConfigError, EmbedderMismatch, ModelNotFound, SceneFileError
from state.models import Formula, Recalled

META = "field_decoder.json"
# Decoding a retrieve-and-edit decoder: the pointer prior's weight and the refinement rounds,
# chosen on held-out scenes (evals/RESULTS.md, "Field decoder"); a folder's meta may override them.
EDIT_DECODING = {"copy_weight": 4.0, "rounds": 2}
SPLIT = "split.json"


# ---------- corpus ----------

def first_sentence(text: str, max_words: int = 32) -> str:
    """The first sentence of a passage, cut to about 32 tokens."""
    clauses = split_clauses(normalise(text))
    words = (clauses[0] if clauses else "").split()
    return " ".join(words[:max_words])


def read_sentences(path: str, max_words: int = 32) -> list[str]:
    """First sentences of a corpus: a JSON list of {title, text}, a jsonl of {text}, or text (one per line)."""
    file = Path(path)
    if not file.is_file():
        raise SceneFileError(path, None, "no such corpus file")
    raw = file.read_text(encoding="utf-8")
    if file.suffix == ".json":
        rows = json.loads(raw)
        texts = [r["text"] for r in rows] if isinstance(rows, list) else [" ".join(v) for v in rows.values()]
    elif file.suffix == ".jsonl":
        texts = [json.loads(line)["text"] for line in raw.splitlines() if line.strip()]
    else:
        texts = [line for line in raw.splitlines() if line.strip()]
    sentences = [first_sentence(t, max_words) for t in texts]
    return [s for s in sentences if len(s.split()) >= 3]


def split_holdout(n: int, holdout: int, seed: int = 0) -> tuple[list[int], list[int]]:
    """(train, held-out) indices: whole passages held out, chosen by a seeded shuffle."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return sorted(order[holdout:]), sorted(order[:holdout])


def nearest_prototypes(queries: np.ndarray, bank: np.ndarray, k: int, skip_self: bool = False,
                       chunk: int = 1024) -> np.ndarray:
    """Indices of the k bank vectors nearest each query (cosine; unit vectors), best first.

    `skip_self`: the queries are the bank itself, and a row may not pick itself.
    """
    out = np.zeros((len(queries), k), dtype=np.int64)
    for start in range(0, len(queries), chunk):
        sims = queries[start : start + chunk] @ bank.T
        if skip_self:
            sims[np.arange(len(sims)), np.arange(start, start + len(sims))] = -np.inf
        top = np.argpartition(-sims, k, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sims, top, axis=1), axis=1)
        out[start : start + chunk] = np.take_along_axis(top, order, axis=1)
    return out


def draft_of(text: str, words: list[str], rng: np.random.Generator, drop: float = 0.2,
             swap: float = 0.2) -> str:
    """A near miss of `text`: each word dropped or swapped for one of `words` (never the text itself)."""
    out = []
    for w in text.split():
        u = rng.random()
        if u < drop:
            continue
        out.append(words[rng.integers(len(words))] if u < drop + swap and words else w)
    if out == text.split() or not out:
        out = text.split()[:-1] or ["."]
    return " ".join(out)


def corpus_vectors(sentences: list[str], embedder: Any, folder: Path) -> np.ndarray:
    """The sentences' vectors, cached in `folder` (safetensors) so evaluation does not embed them again."""
    from safetensors.numpy import load_file, save_file

    cache = folder / "vectors.safetensors"
    if cache.exists():
        stored = load_file(str(cache))["vectors"]
        if stored.shape == (len(sentences), embedder.dim):
            return stored
    vectors = embedder.embed(sentences)
    save_file({"vectors": vectors}, str(cache))
    return vectors


def _plain(text: str) -> str:
    return " ".join(text.split()).lower()


def pick_spoken(vectors: np.ndarray, options: list[list[str]], embedder: Any,
                prototypes: list[list[str]] | None = None) -> list[str]:
    """For each vector, the option whose re-embedding is nearest it, verbatim prototype copies passed over."""
    return _choose(vectors, options, _embed_options(options, embedder), prototypes)


def _embed_options(options: list[list[str]], embedder: Any) -> list[np.ndarray]:
    """Each vector's options embedded, in one embedder call."""
    emb = embedder.embed([t or "." for opts in options for t in opts])
    cuts = np.cumsum([len(opts) for opts in options])[:-1]
    return np.split(emb, cuts)


def _choose(vectors: np.ndarray, options: list[list[str]], embedded: list[np.ndarray],
            prototypes: list[list[str]] | None) -> list[str]:
    best = []
    for i, (v, opts, emb) in enumerate(zip(vectors, options, embedded)):
        sims = emb @ np.asarray(v, dtype=np.float32)
        shown = {_plain(p) for p in (prototypes[i] if prototypes else [])}
        copies = np.array([_plain(t) in shown for t in opts])
        if not copies.all():
            sims = np.where(copies, -np.inf, sims)
        best.append(opts[int(np.argmax(sims))])
    return best


# ---------- model ----------

class _Bias:
    """A logits processor that adds a fixed per-row bias (the lexical head's) at every step."""

    def __init__(self, rows):
        self.rows = rows

    def __call__(self, input_ids, scores):
        return scores + self.rows[:, : scores.shape[1]].to(scores.dtype)


def _projector(dim: int, hidden: int, n_prefix: int):
    import torch.nn as nn

    class FieldProjector(nn.Module):
        """vector (dim) -> n_prefix embeddings (hidden) the LM reads before the text."""

        def __init__(self) -> None:
            super().__init__()
            self.n_prefix, self.hidden = n_prefix, hidden
            self.net = nn.Sequential(nn.Linear(dim, hidden * 2), nn.GELU(), nn.Linear(hidden * 2, n_prefix * hidden))

        def forward(self, vectors):
            return self.net(vectors).view(vectors.shape[0], self.n_prefix, self.hidden)

    return FieldProjector()


class FieldDecoderModel:
    """LM + tokenizer + projector: teacher-forced loss for training, sampling + rerank for decoding."""

    def __init__(self, lm: Any, tokenizer: Any, projector: Any, meta: dict, lexical: Any = None):
        self.lm, self.tokenizer, self.projector, self.meta = lm, tokenizer, projector, meta
        self.lexical = lexical  # vector -> which tokens the text holds (a linear multi-label head)

    def fit_lexical(self, vectors: np.ndarray, texts: list[str], epochs: int = 30, lr: float = 3e-3,
                    weight: float = 1.0, progress: bool = True) -> float:
        """Train the lexical head (bag of tokens from the vector, BCE) on the training sentences; returns seconds."""
        import torch
        from tqdm import tqdm

        start = time.perf_counter()
        vocab = self.lm.get_input_embeddings().weight.shape[0]
        special = set(self.tokenizer.all_special_ids)
        target = torch.zeros(len(texts), vocab)
        for i, t in enumerate(texts):
            ids = [j for j in self.tokenizer(t, add_special_tokens=False)["input_ids"] if j not in special]
            target[i, ids] = 1.0
        head = torch.nn.Linear(vectors.shape[1], vocab)
        optimizer = torch.optim.Adam(head.parameters(), lr=lr)
        x = torch.tensor(np.asarray(vectors), dtype=torch.float32)
        for _ in tqdm(range(epochs), desc="train lexical head", unit="epoch", file=sys.stderr, disable=not progress):
            for batch in torch.randperm(len(x)).split(256):
                loss = torch.nn.functional.binary_cross_entropy_with_logits(head(x[batch]), target[batch])
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
        self.lexical = head.eval()
        self.meta["lexical_weight"] = weight
        return time.perf_counter() - start

    def decoding(self, key: str):
        """A decoding default: the folder's own, else EDIT_DECODING's for an edit decoder, else off."""
        if key in self.meta:
            return self.meta[key]
        return EDIT_DECODING[key] if self.meta.get("prototypes", 0) else {"copy_weight": 0.0, "rounds": 1}[key]

    def _embeds(self, vectors, ids):
        import torch

        prefix = self.projector(vectors)
        tokens = self.lm.get_input_embeddings()(ids)
        return torch.cat([prefix.to(tokens.dtype), tokens], dim=1)

    def loss(self, vectors, ids, mask, labels):
        import torch

        embeds = self._embeds(vectors, ids)
        n = self.projector.n_prefix
        ones = torch.ones(ids.shape[0], n, dtype=mask.dtype)
        labels = torch.cat([torch.full((ids.shape[0], n), -100, dtype=labels.dtype), labels], dim=1)
        return self.lm(inputs_embeds=embeds, attention_mask=torch.cat([ones, mask], dim=1), labels=labels).loss

    def _prompt(self, prototypes: list[str]) -> list[int]:
        """BOS, then each prototype closed by EOS: the text to edit comes before the text to write."""
        tok, cut = self.tokenizer, self.meta["max_tokens"] - 2
        row = [tok.bos_token_id]
        for p in prototypes:
            row += tok(p, add_special_tokens=False)["input_ids"][:cut] + [tok.eos_token_id]
        return row

    def encode(self, texts: list[str], prototypes: list[list[str]] | None = None):
        """(ids, mask, labels), right-padded; only the target text and its EOS are labelled."""
        import torch

        tok, cut = self.tokenizer, self.meta["max_tokens"] - 2
        rows, starts = [], []
        for i, t in enumerate(texts):
            head = self._prompt(prototypes[i] if prototypes else [])
            rows.append(head + tok(t, add_special_tokens=False)["input_ids"][:cut] + [tok.eos_token_id])
            starts.append(len(head))
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        labels = torch.full((len(rows), width), -100, dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
            mask[i, : len(r)] = 1
            labels[i, starts[i] : len(r)] = ids[i, starts[i] : len(r)]
        return ids, mask, labels

    def _prompt_embeds(self, vectors, prototypes: list[list[str]] | None):
        """Left-padded [pad…][prefix][BOS proto EOS …] embeddings, their mask and each row's prompt tokens."""
        import torch

        rows = [self._prompt(prototypes[i] if prototypes else []) for i in range(len(vectors))]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.tokenizer.pad_token_id, dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, width - len(r):] = torch.tensor(r)
        tokens = self.lm.get_input_embeddings()(ids)
        prefix = self.projector(vectors).to(tokens.dtype)
        n = prefix.shape[1]
        embeds = torch.zeros(len(rows), width + n, tokens.shape[2], dtype=tokens.dtype)
        mask = torch.zeros(len(rows), width + n, dtype=torch.long)
        for i, r in enumerate(rows):
            pad = width - len(r)
            embeds[i, :pad] = tokens[i, :pad]
            embeds[i, pad : pad + n] = prefix[i]
            embeds[i, pad + n :] = tokens[i, pad:]
            mask[i, pad:] = 1
        return embeds, mask, rows

    def generate(self, vectors: np.ndarray, candidates: int = 1, max_new_tokens: int = 48,
                 temperature: float = 0.8, batch_size: int = 64, seed: int = 0,
                 lexical_weight: float | None = None,
                 prototypes: list[list[str]] | None = None, copy_weight: float | None = None) -> list[list[str]]:
        """For each vector: the greedy text, then `candidates - 1` sampled ones.

        `prototypes[i]` are the memory sentences the text for vector i may edit
        (a model trained with prototypes needs them; extra ones are cut).

        With a lexical head, every step's logits lean toward the tokens the
        vector says the text holds (log-sigmoid of the head, times the weight);
        `copy_weight` adds a flat bonus to the prototypes' tokens.
        """
        import torch

        torch.manual_seed(seed)
        weight = self.meta.get("lexical_weight", 0.0) if lexical_weight is None else lexical_weight
        k = self.meta.get("prototypes", 0)
        if copy_weight is None:
            copy_weight = self.decoding("copy_weight")
        if k and (prototypes is None or len(prototypes) != len(vectors)):
            raise DecoderConfigError(f"this field decoder edits {k} prototype sentence(s) per vector: "
                                     "pass prototypes (one list per vector)")
        out: list[list[str]] = [[] for _ in range(len(vectors))]
        self.projector.eval()
        self.lm.eval()
        for start in range(0, len(vectors), batch_size):
            chunk = torch.tensor(np.asarray(vectors[start : start + batch_size]), dtype=torch.float32)
            protos = [list(p)[:k] for p in prototypes[start : start + batch_size]] if k else None
            with torch.inference_mode():
                embeds, mask, prompts = self._prompt_embeds(chunk, protos)
                runs = [dict(do_sample=False)]
                if candidates > 1:
                    runs.append(dict(do_sample=True, temperature=temperature, top_p=0.95,
                                     num_return_sequences=candidates - 1))
                bias = None
                if self.lexical is not None and weight:
                    bias = weight * torch.nn.functional.logsigmoid(self.lexical(chunk))
                if protos and copy_weight:
                    # A pointer prior: the prototypes' tokens are the likeliest names to copy.
                    seen = torch.zeros(len(chunk), self.lm.get_input_embeddings().weight.shape[0])
                    for i, row in enumerate(prompts):
                        seen[i, row] = copy_weight
                    seen[:, self.tokenizer.all_special_ids] = 0.0
                    bias = seen if bias is None else bias + seen
                for run in runs:
                    extra: dict[str, Any] = {}
                    if bias is not None:
                        rows = bias.repeat_interleave(run.get("num_return_sequences", 1), dim=0)
                        extra["logits_processor"] = [_Bias(rows)]
                    ids = self.lm.generate(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=max_new_tokens,
                                           pad_token_id=self.tokenizer.pad_token_id, no_repeat_ngram_size=3,
                                           eos_token_id=self.tokenizer.eos_token_id, **run, **extra)
                    texts = self.tokenizer.batch_decode(ids, skip_special_tokens=True)
                    per = len(texts) // len(chunk)
                    for i in range(len(chunk)):
                        out[start + i].extend(t.strip() for t in texts[i * per : (i + 1) * per])
        return out

    def speak(self, vectors: np.ndarray, embedder: Any, candidates: int = 8, max_new_tokens: int = 48,
              prototypes: list[list[str]] | None = None, rounds: int | None = None,
              copy_weight: float | None = None) -> list[str]:
        """The candidate whose re-embedding is closest to each vector (see `speak_rounds`)."""
        return self.speak_rounds(vectors, embedder, candidates, max_new_tokens, prototypes, rounds, copy_weight)[-1]

    def speak_rounds(self, vectors: np.ndarray, embedder: Any, candidates: int = 8, max_new_tokens: int = 48,
                     prototypes: list[list[str]] | None = None, rounds: int | None = None,
                     copy_weight: float | None = None) -> list[list[str]]:
        """The best text per vector after each round: the candidate whose re-embedding is closest to it.

        A candidate that only repeats one of its prototypes word for word is
        passed over while an edited one exists: the decoder is to say what
        the vector holds, not to hand back the memory it was shown. With
        `rounds` > 1 (and prototypes) each round edits the best text so far,
        in the first prototype's place, and adds its candidates to the pool.
        """
        rounds = self.decoding("rounds") if rounds is None else rounds
        options = self.generate(vectors, candidates=candidates, max_new_tokens=max_new_tokens, prototypes=prototypes,
                                copy_weight=copy_weight)
        embedded = _embed_options(options, embedder)
        bests = [_choose(vectors, options, embedded, prototypes)]
        for _ in range(rounds - 1 if prototypes else 0):
            drafts = [[b] + list(p)[1:] for b, p in zip(bests[-1], prototypes)]
            more = self.generate(vectors, candidates=candidates, max_new_tokens=max_new_tokens, prototypes=drafts,
                                 copy_weight=copy_weight)
            # Only the new candidates are embedded; the pool keeps the earlier rounds'.
            embedded = [np.concatenate([e, m]) for e, m in zip(embedded, _embed_options(more, embedder))]
            options = [o + m for o, m in zip(options, more)]
            bests.append(_choose(vectors, options, embedded, prototypes))
        return bests

    def save(self, out: Path) -> None:
        from safetensors.torch import save_file

        out.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.projector.state_dict().items()}, str(out / "projector.safetensors"))
        if self.lexical is not None:
            save_file({k: v.contiguous() for k, v in self.lexical.state_dict().items()}, str(out / "lexical.safetensors"))
        if self.meta["kind"] == "tiny":
            self.lm.save_pretrained(str(out / "lm"), safe_serialization=True)
            self.tokenizer.save_pretrained(str(out / "lm"))
        else:
            self.lm.save_pretrained(str(out / "adapter"), safe_serialization=True)
        (out / META).write_text(json.dumps(self.meta, indent=2))


def _build(base: str, texts: list[str], dim: int, n_prefix: int, work: Path, hidden: int, layers: int,
           vocab: int, rank: int, max_positions: int):
    """(lm, tokenizer, kind) ready to train: a tiny LM from scratch, or a frozen base + LoRA."""
    if base == "tiny":
        from adapters.training import tiny_causal_lm, train_tokenizer

        tokenizer = train_tokenizer(texts, work / "lm", vocab_size=vocab)
        lm = tiny_causal_lm(tokenizer, hidden=hidden, layers=layers, heads=max(1, hidden // 64),
                            max_positions=max_positions)
        return lm, tokenizer, "tiny"
    from peft import LoraConfig, get_peft_model

    from adapters.chat_models import load_base, load_tokenizer, resolve_model

    folder, _ = resolve_model(base)
    tokenizer = load_tokenizer(folder)
    if tokenizer.bos_token_id is None:
        tokenizer.bos_token = tokenizer.cls_token or tokenizer.eos_token
    lm = load_base(folder, for_training=True)
    lm = get_peft_model(lm, LoraConfig(r=rank, lora_alpha=rank * 2, lora_dropout=0.0, target_modules="all-linear",
                                       task_type="CAUSAL_LM"))
    return lm, tokenizer, "lora"


def train_field_decoder(corpus: str, base: str, out: str, *, embedder_spec: str | None = None,
                        epochs: int = 5, lr: float = 2e-3, batch_size: int = 32, holdout: int = 200,
                        n_prefix: int = 4, hidden: int = 192, layers: int = 3, vocab: int = 3072, rank: int = 16,
                        max_tokens: int = 48, noise: float = 0.3, limit: int | None = None, seed: int = 0,
                        lexical_weight: float = 1.0, prototypes: int = 2, drafts: float = 0.25,
                        threads: int | None = None, progress: bool = True) -> dict:
    """Train projector (+ tiny LM or LoRA) on the corpus's first sentences, holding out `holdout` passages.

    `prototypes=k` > 0 trains a retrieve-and-edit decoder: each sentence is
    written after k of its nearest other training sentences (drawn each epoch
    from the nearest k + 2, so the model learns to edit, not to copy). In a
    `drafts` share of the examples the first prototype is a draft of the
    target itself, words dropped or swapped for its neighbours' words, so the
    model also learns to correct a near miss: decoding can then feed its
    best text back for another round (vec2text-style refinement).
    """
    import torch
    from tqdm import tqdm

    from adapters.embedder import DEFAULT_EMBEDDER, load_embedder

    if epochs < 1 or lr <= 0 or batch_size < 1 or prototypes < 0:
        raise DecoderConfigError("epochs and batch size must be >= 1, lr > 0, prototypes >= 0")
    if threads:
        torch.set_num_threads(threads)  # on a busy 2-core box one thread is often faster than two
    torch.manual_seed(seed)
    sentences = read_sentences(corpus)
    if limit:
        sentences = sentences[:limit]
    if len(sentences) <= holdout + batch_size:
        raise DecoderConfigError(f"{corpus}: {len(sentences)} sentences are too few for a hold-out of {holdout}")
    train_idx, held_idx = split_holdout(len(sentences), holdout, seed)
    embedder = load_embedder(embedder_spec or DEFAULT_EMBEDDER)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    vectors = corpus_vectors(sentences, embedder, out_dir)
    embed_s = time.perf_counter() - start
    train_texts = [sentences[i] for i in train_idx]
    lm, tokenizer, kind = _build(base, train_texts, vectors.shape[1], n_prefix, out_dir, hidden, layers, vocab, rank,
                                 max_positions=n_prefix + (prototypes + 1) * max_tokens + 8)
    projector = _projector(vectors.shape[1], lm.get_input_embeddings().weight.shape[1], n_prefix)
    meta = {"kind": kind, "base": base if kind == "tiny" else str(Path(base).resolve()), "embedder": embedder.name,
            "dim": int(vectors.shape[1]), "n_prefix": n_prefix, "max_tokens": max_tokens, "corpus": str(corpus),
            "sentences": len(sentences), "holdout": holdout, "seed": seed, "epochs": epochs, "lr": lr,
            "prototypes": prototypes, "drafts": drafts if prototypes else 0.0}
    model = FieldDecoderModel(lm, tokenizer, projector, meta)
    params = [p for p in list(lm.parameters()) + list(projector.parameters()) if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    steps = epochs * ((len(train_idx) + batch_size - 1) // batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.1)
    train_vec = torch.tensor(vectors[train_idx])
    gen = torch.Generator().manual_seed(seed)
    pool = nearest_prototypes(vectors[train_idx], vectors[train_idx], prototypes + 2, skip_self=True) \
        if prototypes else None
    draw = np.random.default_rng(seed)

    def prototypes_of(rows: list[int]) -> list[list[str]] | None:
        if pool is None:
            return None
        # k of the nearest k + 2, kept in nearness order; a duplicate of the target is never a prototype.
        picks = [sorted(draw.choice(pool.shape[1], prototypes, replace=False)) for _ in rows]
        out = [[train_texts[j] for j in pool[r, p] if train_texts[j] != train_texts[r]] for r, p in zip(rows, picks)]
        for r, protos in zip(rows, out):
            if draw.random() < drafts:
                protos[:1] = [draft_of(train_texts[r], " ".join(train_texts[j] for j in pool[r]).split(), draw)]
        return out

    losses: list[float] = []
    lm.train()
    projector.train()
    start = time.perf_counter()
    with tqdm(total=steps, desc=f"train field-decoder ({kind})", unit="step", file=sys.stderr,
              disable=not progress) as bar:
        for _ in range(epochs):
            for batch in torch.randperm(len(train_idx), generator=gen).split(batch_size):
                v = train_vec[batch]
                # Noise on the vector: held-out scenes are never exactly a training vector.
                v = torch.nn.functional.normalize(v + noise * torch.rand(len(v), 1, generator=gen)
                                                  * torch.randn(v.shape, generator=gen) / v.shape[1] ** 0.5, dim=-1)
                rows = batch.tolist()
                ids, mask, labels = model.encode([train_texts[i] for i in rows], prototypes_of(rows))
                loss = model.loss(v, ids, mask, labels)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                losses.append(loss.item())
                bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
                bar.update()
    lexical_s = model.fit_lexical(vectors[train_idx], train_texts, weight=lexical_weight, progress=progress)
    train_s = time.perf_counter() - start
    meta.update(train_s=round(train_s, 1), lexical_s=round(lexical_s, 1), embed_s=round(embed_s, 1), steps=steps,
                first_loss=round(losses[0], 4), final_loss=round(float(np.mean(losses[-max(1, min(50, steps // 5)):])), 4),
                torch_threads=torch.get_num_threads())
    model.save(out_dir)
    (out_dir / SPLIT).write_text(json.dumps({"train": train_idx, "holdout": held_idx}))
    (out_dir / "losses.json").write_text(json.dumps([round(x, 4) for x in losses]))
    return meta


@lru_cache(maxsize=2)
def load_field_decoder(folder: str) -> FieldDecoderModel:
    """A trained field decoder from its folder, built once per process."""
    import torch
    from safetensors.torch import load_file

    root = Path(folder).expanduser()
    if not (root / META).exists() or not (root / "projector.safetensors").exists():
        raise ModelNotFound(f"{folder!r} holds no field decoder ({META} + projector.safetensors): "
                            "train one with `scenemind train field-decoder --corpus FILE --base tiny --out DIR`")
    meta = json.loads((root / META).read_text())
    if meta["kind"] == "tiny":
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(root / "lm"))
        lm = AutoModelForCausalLM.from_pretrained(str(root / "lm"))
    else:
        from adapters.chat_models import attach_adapter, load_base, load_tokenizer, resolve_model

        base, _ = resolve_model(meta["base"])
        tokenizer = load_tokenizer(base)
        if tokenizer.bos_token_id is None:
            tokenizer.bos_token = tokenizer.cls_token or tokenizer.eos_token
        lm = attach_adapter(load_base(base), root / "adapter")
    projector = _projector(meta["dim"], lm.get_input_embeddings().weight.shape[1], meta["n_prefix"])
    projector.load_state_dict(load_file(str(root / "projector.safetensors")))
    lexical = None
    if (root / "lexical.safetensors").exists():
        state = load_file(str(root / "lexical.safetensors"))
        lexical = torch.nn.Linear(state["weight"].shape[1], state["weight"].shape[0])
        lexical.load_state_dict(state)
        lexical.eval()
    lm.eval()
    projector.eval()
    return FieldDecoderModel(lm, tokenizer, projector, meta, lexical)


class FieldTextDecoder:
    """`decoder=field:<dir>`: the graph speaks its field; it cites the scenes the field is made of."""

    def __init__(self, folder: str, embedder: Any, candidates: int = 8, max_new_tokens: int = 48):
        self.name = f"field:{folder}"
        self.model = load_field_decoder(folder)
        if self.model.meta["dim"] != embedder.dim or self.model.meta["embedder"] != embedder.name:
            raise EmbedderMismatch(f"field decoder {folder!r} was trained on {self.model.meta['embedder']} "
                                   f"({self.model.meta['dim']}-d) but the store uses {embedder.name} "
                                   f"({embedder.dim}-d): train it again with this embedder")
        self.embedder, self.candidates, self.max_new_tokens = embedder, candidates, max_new_tokens

    def decode(self, question: str, field: np.ndarray, scenes: list[Recalled], formulas: list[Formula],
               reading: Any = None) -> Decoded:
        evidence = list(reading.evidence) if reading is not None else []
        if not len(field):
            return Decoded("The field is empty: nothing to say.", [], evidence)
        k = self.model.meta.get("prototypes", 0)
        # The field's strongest scenes are the memory it edits (their first sentences, as in training).
        protos = [[first_sentence(s.text) for s in scenes[:k]]] if k else None
        text = self.model.speak(np.asarray([field], dtype=np.float32), self.embedder, self.candidates,
                                self.max_new_tokens, prototypes=protos)[0]
        # The text is spoken from the vector, not read from a sentence: the reader's chain is its evidence.
        return Decoded(text, [s.id for s in scenes], evidence)
