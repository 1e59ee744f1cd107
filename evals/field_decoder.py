"""Field decoder on held-out scenes: does the text it speaks carry the vector it was given?

For each held-out first sentence (whole passages held out at training time,
`split.json` in the decoder folder), decode its MiniLM vector into text, then
measure
- cosine(re-embedded decoded text, original vector),
- token F1 of the decoded text against the original sentence,
against a nearest-neighbour baseline that returns the closest *training*
sentence. Writes the "## Field decoder" section of evals/RESULTS.md and
evals/field_decoder.png.

    python -m evals.field_decoder --model evals/.cache/field-tiny
"""

from __future__ import annotations

import argparse
import json
import re
import time
from collections import Counter
from pathlib import Path

import numpy as np

from adapters.embedder import load_embedder
from adapters.field_decoder import (META, SPLIT, _plain, corpus_vectors, load_field_decoder, nearest_prototypes,
                                    read_sentences)
from evals.results import replace_section

HERE = Path(__file__).resolve().parent
SECTION = "Field decoder"


def tokens(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def token_f1(pred: str, gold: str) -> float:
    p, g = tokens(pred), tokens(gold)
    common = sum((Counter(p) & Counter(g)).values())
    if not p or not g or not common:
        return 0.0
    precision, recall = common / len(p), common / len(g)
    return 2 * precision * recall / (precision + recall)


def evaluate(model_dir: str, candidates: int = 24, limit: int | None = None, fit_lexical: bool = False,
             tuned_on: int = 0) -> dict:
    model = load_field_decoder(model_dir)
    meta = model.meta
    split = json.loads((Path(model_dir) / SPLIT).read_text())
    sentences = read_sentences(meta["corpus"])
    embedder = load_embedder(meta["embedder"])
    vectors = corpus_vectors(sentences, embedder, Path(model_dir))
    held = split["holdout"][:limit] if limit else split["holdout"]
    train = np.asarray(split["train"])
    gold = [sentences[i] for i in held]
    target = vectors[held]
    if model.lexical is None and fit_lexical:
        # A folder trained before the lexical head existed: fit it on the training split, as training now does.
        meta["lexical_s"] = round(model.fit_lexical(vectors[train], [sentences[i] for i in train]), 1)
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in model.lexical.state_dict().items()},
                  str(Path(model_dir) / "lexical.safetensors"))
        (Path(model_dir) / META).write_text(json.dumps(meta, indent=2))

    # Memory is the training split: the baseline returns its nearest sentence; a retrieve-and-edit
    # decoder reads its k nearest (the baseline's sentence first) and writes a new one.
    k = max(1, meta.get("prototypes", 0))
    near = train[nearest_prototypes(target, vectors[train], k)]
    nearest = [sentences[i] for i in near[:, 0]]
    protos = [[sentences[i] for i in row] for row in near] if meta.get("prototypes", 0) else None
    start = time.perf_counter()
    plain = [opts[0] for opts in model.generate(target, candidates=1, lexical_weight=0.0, copy_weight=0.0,
                                                prototypes=protos)]
    greedy = [opts[0] for opts in model.generate(target, candidates=1, prototypes=protos)]
    by_round = model.speak_rounds(target, embedder, candidates=candidates, prototypes=protos)
    spoken, rounds = by_round[-1], len(by_round)
    rows_of_spoken = {f"field decoder (best of {candidates}, one round)": by_round[0]} if rounds > 1 else {}
    best_name = f"field decoder (best of {candidates}" + (f", {rounds} rounds)" if rounds > 1 else ")")
    rows_of_spoken[best_name] = spoken
    decode_s = time.perf_counter() - start

    def score(texts: list[str]) -> dict:
        emb = embedder.embed([t or "." for t in texts])
        cos = np.sum(emb * target, axis=1)
        f1 = np.array([token_f1(t, g) for t, g in zip(texts, gold)])
        return {"cosine": round(float(cos.mean()), 4), "cosine_sd": round(float(cos.std()), 4),
                "token_f1": round(float(f1.mean()), 4), "per_item_cosine": cos.round(4).tolist(),
                # The scenes after the first `tuned_on`, which no decoding setting was chosen on.
                "untouched_cosine": round(float(cos[tuned_on:].mean()), 4),
                "untouched_f1": round(float(f1[tuned_on:].mean()), 4)}

    rows = {"field decoder (greedy, no lexical head or pointer prior)": score(plain),
            "field decoder (greedy)": score(greedy),
            **{name: score(texts) for name, texts in rows_of_spoken.items()},
            "nearest training sentence": score(nearest)}
    best = rows[best_name]["per_item_cosine"]
    base = rows["nearest training sentence"]["per_item_cosine"]
    wins = float(np.mean(np.asarray(best) > np.asarray(base)))
    # How often the spoken text is only a prototype repeated word for word (then it is not decoding).
    copies = float(np.mean([_plain(t) in {_plain(p) for p in ps} for t, ps in zip(spoken, protos)])) if protos else 0.0
    # And how much of it is the prototypes' wording: token F1 against the closest one.
    overlap = [max(token_f1(t, p) for p in ps) for t, ps in zip(spoken, protos)] if protos else [0.0]
    return {"meta": meta, "held_out": len(held), "rows": rows, "wins_vs_nn": round(wins, 3),
            "copies": round(copies, 3), "prototypes": meta.get("prototypes", 0),
            "prototype_f1": round(float(np.mean(overlap)), 4), "near_copies": round(float(np.mean(np.asarray(overlap) > 0.8)), 3),
            "spoken": spoken, "nearest": nearest,
            "decode_s": round(decode_s, 1), "tuned_on": tuned_on, "copy_weight": model.decoding("copy_weight"), "rounds": rounds,
            "examples": list(zip(gold[:5], spoken[:5], nearest[:5]))}


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["rows"])
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, key in zip(axes, ("cosine", "token_f1")):
        vals = [result["rows"][n][key] for n in names]
        ax.barh(names, vals, color=["#c7dbe8", "#a9c6d9", "#7aa6c2", "#2f6f95", "#c98b4a"][-len(names):])
        ax.set_title(f"{key} on {result['held_out']} held-out scenes")
        for y, v in enumerate(vals):
            ax.text(v, y, f" {v:.3f}", va="center")
        ax.set_xlim(0, max(vals) * 1.25)
    axes[1].set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def write_section(result: dict, command: str, results_md: Path, note: str = "") -> None:
    meta = result["meta"]
    lines = [
             "Text from the scene vector: a projector maps a 384-d MiniLM vector to "
             f"{meta['n_prefix']} soft-prefix embeddings of a causal LM "
             f"({'a small Llama trained from scratch with a BPE tokenizer trained on the corpus' if meta['kind'] == 'tiny' else 'LoRA on ' + meta['base']}). "
             + (f"It is a retrieve-and-edit decoder: it also reads the {meta['prototypes']} training sentences nearest "
                "the vector (the baseline's sentence first) and writes a new sentence; candidates that repeat a "
                "prototype word for word are passed over. " if meta.get("prototypes") else "")
             + "Held-out scenes: first sentences (~32 tokens) of 2WikiMultihopQA passages, whole passages held out.",
             "", "```", command, "```", "", note, "",
             f"- sentences: {meta['sentences']} ({meta['sentences'] - meta['holdout']} train, {result['held_out']} held out)",
             f"- training: {meta['steps']} steps ({meta['epochs']} epochs), {meta['train_s']:.0f} s on 2 shared CPU "
             f"cores (torch threads: {meta['torch_threads']}); embedding the corpus: {meta['embed_s']:.0f} s; "
             f"loss {meta['first_loss']} -> {meta['final_loss']}; lexical head: {meta.get('lexical_s', 0):.0f} s "
             f"(weight {meta.get('lexical_weight', 0)})"
             + (f"; {meta['prototypes']} prototypes, drafts in {meta.get('drafts', 0):.0%} of the examples"
                if meta.get("prototypes") else ""),
             f"- decoding the held-out set: {result['decode_s']} s",
             f"- decoding: pointer prior {result.get('copy_weight', 0)}, {result.get('rounds', 1)} round(s)"
             + (f"; these settings were chosen on the first {result['tuned_on']} held-out scenes, so the last two "
                f"columns report the other {result['held_out'] - result['tuned_on']} alone" if result.get("tuned_on")
                else ""), "",
             "| held-out scenes | cosine(re-embedded text, vector) | token F1 vs original |"
             + (" cosine, untouched scenes | token F1, untouched scenes |" if result.get("tuned_on") else ""),
             "|---|---|---|" + ("---|---|" if result.get("tuned_on") else "")]
    for name, row in result["rows"].items():
        lines.append(f"| {name} | {row['cosine']:.4f} (sd {row['cosine_sd']:.3f}) | {row['token_f1']:.4f} |"
                     + (f" {row['untouched_cosine']:.4f} | {row['untouched_f1']:.4f} |" if result.get("tuned_on")
                        else ""))
    lines += ["", f"Best-of-N field decoding beats the nearest neighbour's cosine on {result['wins_vs_nn']:.0%} of the "
                  f"held-out scenes; {result.get('copies', 0):.0%} of its texts repeat a prototype word for word, "
                  f"{result.get('near_copies', 0):.0%} share over 0.8 token F1 with one (mean token F1 with the "
                  f"closest prototype: {result.get('prototype_f1', 0):.3f}). "
                  "Examples (original / decoded / nearest training sentence):", ""]
    for g, d, n in result["examples"][:3]:
        lines += [f"- original: {g}", f"  - decoded: {d}", f"  - nearest: {n}"]
    lines += ["", "![field decoder](field_decoder.png)", ""]
    replace_section(results_md, SECTION, "\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="evals/.cache/field-tiny", help="a trained field-decoder folder")
    ap.add_argument("--candidates", type=int, default=24)
    ap.add_argument("--fit-lexical", action="store_true", help="fit the lexical head if the folder has none")
    ap.add_argument("--limit", type=int)
    ap.add_argument("--tuned-on", type=int, default=0, dest="tuned_on",
                    help="the first N held-out scenes were used to choose decoding settings: report the rest apart")
    ap.add_argument("--command", default="", help="the training command to record")
    ap.add_argument("--note", default="", help="a line recorded under the command")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    result = evaluate(args.model, args.candidates, args.limit, args.fit_lexical, args.tuned_on)
    for name, row in result["rows"].items():
        print(f"{name:58s} cosine {row['cosine']:.4f}  token F1 {row['token_f1']:.4f}  "
              f"(untouched: {row['untouched_cosine']:.4f} / {row['untouched_f1']:.4f})")
    print(f"wins vs nearest neighbour: {result['wins_vs_nn']:.1%}; verbatim prototype copies: {result['copies']:.1%}; "
          f"near copies (F1 > 0.8): {result['near_copies']:.1%}; token F1 with the closest prototype: "
          f"{result['prototype_f1']:.3f}")
    if not args.no_write:
        command = args.command or f"python -m evals.field_decoder --model {args.model}"
        write_section(result, command, HERE / "RESULTS.md", args.note)
        plot(result, HERE / "field_decoder.png")
        (Path(args.model) / "eval.json").write_text(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
