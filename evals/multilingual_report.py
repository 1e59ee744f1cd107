"""Which embedder should be the default: both bundled embedders measured in one run.

    python -m evals.multilingual_report [--embedders all-MiniLM-L6-v2 multilingual-e5-small]
                                        [--xquad-limit N] [--record]

For each embedder: XQuAD paragraph retrieval in four directions (ru→ru, en→en, ru→en,
en→ru; dense and full mode, `evals.xquad`), multi-hop passage recall R@2/R@5 in full mode
on musique_train, hotpotqa_train and 2wiki_dev50 (`evals.multihop`), ingest throughput
against the embedder's own raw throughput and `ask` p50 (`evals.bench_foundation`).
`--record` writes the table into evals/RESULTS.md ("Multilingual: choosing the default
embedder") and a PNG beside it. Stores are cached under evals/.cache.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
DIRECTIONS = [("ru", "ru"), ("en", "en"), ("ru", "en"), ("en", "ru")]
MULTIHOP = {
    "musique_train": ("multihop/musique_train.json", "multihop/musique_train_corpus.json"),
    "hotpotqa_train": ("multihop/hotpotqa_train.json", "multihop/hotpotqa_train_corpus.json"),
    "2wiki_dev50": ("multihop/2wiki_dev50.json", None),
}
TARGETS = {"ru→ru": 88.0, "en→en": 92.0, "ru→en": 78.0, "en→ru": 78.0}


def xquad(embedder: str, data: Path, limit: int | None) -> dict[str, Any]:
    from evals.xquad import run

    out = {}
    for q, p in DIRECTIONS:
        res = run(str(data / f"xquad/xquad_dev24.{q}.json"), str(data / f"xquad/xquad_dev24.{p}.json"),
                  ["dense", "full"], [1, 5], embedder, limit)
        out[f"{q}→{p}"] = res["modes"]
        print(f"{embedder} xquad {q}→{p}: {json.dumps(res['modes'])}", file=sys.stderr)
    return out


def multihop(embedder: str, data: Path) -> dict[str, Any]:
    from evals.multihop import build_store, evaluate, load_corpus, load_questions
    from state.context import Context

    out = {}
    for name, (qpath, cpath) in MULTIHOP.items():
        questions = load_questions(str(data / qpath))
        corpus = load_corpus(str(data / cpath) if cpath else None, questions)
        data_dir, ids = build_store(corpus, embedder)
        res = evaluate(questions, ids, Context(data_dir=data_dir, embedder=embedder), [2, 5])
        out[name] = {"R@2": res["R@2"], "R@5": res["R@5"], "p50_ms": res["latency_ms"]["p50"]}
        print(f"{embedder} {name} full: {out[name]}", file=sys.stderr)
    return out


def foundation(embedder: str, questions: int) -> dict[str, Any]:
    from evals.bench_foundation import ask_latency, demo_questions, ingest_ratio
    from scenemind_data import DEMO_SCENES

    tmp = Path(tempfile.mkdtemp(prefix="scenemind-ml-"))
    try:
        ingest = ingest_ratio(str(DEMO_SCENES), tmp / "ingest", embedder_spec=embedder)
        latency = ask_latency(tmp / "ingest" / "run0", demo_questions(questions), embedder_spec=embedder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"ingest": ingest, "ask_p50_ms": latency["total"]["p50_ms"], "ask_p95_ms": latency["total"]["p95_ms"]}


def table(results: dict[str, dict[str, Any]]) -> str:
    names = list(results)
    rows = ["| measure | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for direction in TARGETS:
        for mode in ("dense", "full"):
            cells = [f"{r['xquad'][direction][mode]['R@1']:.1f} / {r['xquad'][direction][mode]['R@5']:.1f}"
                     for r in results.values()]
            goal = f" (target R@1 >= {TARGETS[direction]:.0f})" if mode == "full" else ""
            rows.append(f"| XQuAD {direction} {mode} R@1 / R@5{goal} | " + " | ".join(cells) + " |")
    for name in MULTIHOP:
        cells = [f"{r['multihop'][name]['R@2']:.1f} / {r['multihop'][name]['R@5']:.1f}" for r in results.values()]
        rows.append(f"| {name} full R@2 / R@5 | " + " | ".join(cells) + " |")
    rows.append("| ingest passages/s (raw embedder) -> ratio | " + " | ".join(
        f"{r['foundation']['ingest']['ingest_per_s']:.1f} ({r['foundation']['ingest']['raw_per_s']:.1f}) -> "
        f"{r['foundation']['ingest']['ratio']:.3f}" for r in results.values()) + " |")
    rows.append("| `ask` p50 / p95 ms (full graph, extractive) | " + " | ".join(
        f"{r['foundation']['ask_p50_ms']:.0f} / {r['foundation']['ask_p95_ms']:.0f}" for r in results.values()) + " |")
    return "\n".join(rows)


def plot(results: dict[str, dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    labels = [f"{d}\n{m}" for d in TARGETS for m in ("dense", "full")] + [f"{n}\nR@5" for n in MULTIHOP]
    x = np.arange(len(labels))
    width = 0.8 / max(len(results), 1)
    fig, ax = plt.subplots(figsize=(12, 4))
    for n, (name, r) in enumerate(results.items()):
        values = [r["xquad"][d][m]["R@1"] for d in TARGETS for m in ("dense", "full")]
        values += [r["multihop"][h]["R@5"] for h in MULTIHOP]
        ax.bar(x + (n - (len(results) - 1) / 2) * width, values, width, label=name)
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_ylabel("XQuAD R@1 / multi-hop full R@5 (%)")
    ax.set_ylim(0, 100)
    ax.set_title("Embedders: paragraph retrieval across languages (XQuAD dev24) and multi-hop recall")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def record(results: dict[str, dict[str, Any]], args: argparse.Namespace, png: Path) -> None:
    from evals.results import replace_section

    limit = f" --xquad-limit {args.xquad_limit}" if args.xquad_limit else ""
    body = f"""Command: `python -m evals.multilingual_report --record{limit}` (run {time.strftime("%Y-%m-%d %H:%M UTC",
time.gmtime())}; both embedders in the same run, 2 shared CPU cores; stores cached under evals/.cache).
One direction alone: `python -m evals.xquad --questions ../shared/data/xquad/xquad_dev24.ru.json
--passages ../shared/data/xquad/xquad_dev24.en.json --embedder multilingual-e5-small --json`.
XQuAD dev24: 120 paragraphs and 632 questions per language, paragraphs stored without titles,
gold by parallel position. Multi-hop: `evals.multihop` full mode (2wiki_dev50 pools its own
contexts). Ingest and `ask`: `evals.bench_foundation` on the 300-passage demo corpus (median of
3 alternating runs; 30 two-hop questions). Timings on a shared machine drift by +-20%.

{table(results)}

![embedders]({png.name})"""
    replace_section(Path(__file__).with_name("RESULTS.md"), "Multilingual: choosing the default embedder", body)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--embedders", nargs="+", default=["all-MiniLM-L6-v2", "multilingual-e5-small"])
    ap.add_argument("--data", type=Path, default=DATA, help="the shared data folder (xquad/, multihop/)")
    ap.add_argument("--xquad-limit", type=int, help="first N questions per direction only")
    ap.add_argument("--questions", type=int, default=30, help="questions for the ask latency")
    ap.add_argument("--plot", type=Path, default=Path(__file__).with_name("multilingual.png"))
    ap.add_argument("--record", action="store_true", help="replace the section in evals/RESULTS.md")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--from-json", type=Path, help="table, plot and record from an earlier run's --json output")
    args = ap.parse_args(argv)
    if args.from_json:
        results = json.loads(args.from_json.read_text(encoding="utf-8").strip().splitlines()[-1])
    else:
        # Timings first, one embedder right after the other, so a drifting shared machine hits both alike.
        results = {embedder: {"foundation": foundation(embedder, args.questions)} for embedder in args.embedders}
        for embedder in args.embedders:
            results[embedder]["multihop"] = multihop(embedder, args.data)
            results[embedder]["xquad"] = xquad(embedder, args.data, args.xquad_limit)
    print(table(results))
    plot(results, args.plot)
    if args.record:
        record(results, args, args.plot)
    if args.json:
        print(json.dumps(results, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
