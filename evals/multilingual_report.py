"""Which embedder should be the default: both bundled embedders measured in one run.

    python -m evals.multilingual_report [--embedders all-MiniLM-L6-v2 multilingual-e5-small]
                                        [--xquad-limit N] [--record]

For each embedder: XQuAD paragraph retrieval in four directions (ru→ru, en→en, ru→en,
en→ru; dense and full mode, `evals.xquad`), multi-hop passage recall R@2/R@5 in full mode
on musique_train, hotpotqa_train and 2wiki_dev50 (`evals.multihop`), ingest throughput
against the embedder's own raw throughput and `ask` p50 (both embedders interleaved in one
process, so a drifting shared machine loads each alike).
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

import numpy as np

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


def paired(embedders: list[str], questions: int, chunk: int = 50) -> dict[str, dict[str, Any]]:
    """Ingest throughput and `ask` latency of every embedder, interleaved so that a shared machine's
    drifting load falls on each alike: the demo corpus chunk by chunk (each chunk embedded raw, then
    ingested into that embedder's own store, by each embedder in turn), then each question asked of
    every store in turn."""
    from adapters.embedder import load_embedder
    from adapters.memory import Memory, passage_text
    from adapters.sources import read_sources
    from evals.bench_foundation import demo_questions
    from graph import graph
    from scenemind_data import DEMO_SCENES
    from state.context import Context

    records = read_sources([str(DEMO_SCENES)])
    tmp = Path(tempfile.mkdtemp(prefix="scenemind-ml-"))
    raw, full, ask = ({e: 0.0 for e in embedders}, {e: 0.0 for e in embedders}, {e: [] for e in embedders})
    try:
        models = {e: load_embedder(e) for e in embedders}
        stores = {e: Memory(str(tmp / str(n)), models[e], create=True) for n, e in enumerate(embedders)}
        for e in embedders:
            models[e].embed([passage_text(r.title, r.text) for r in records[:16]])  # warm every path alike
        for start in range(0, len(records), chunk):
            part = records[start : start + chunk]
            texts = [passage_text(r.title, r.text) for r in part]
            for e in embedders:
                t0 = time.perf_counter()
                models[e].embed(texts)
                t1 = time.perf_counter()
                stores[e].ingest(part)
                raw[e], full[e] = raw[e] + t1 - t0, full[e] + time.perf_counter() - t1
            print(f"\ringest {start + len(part)}/{len(records)}", end="", file=sys.stderr, flush=True)
        contexts = {e: Context(data_dir=str(tmp / str(n)), embedder=e) for n, e in enumerate(embedders)}
        asked = demo_questions(questions + 1)
        for e in embedders:
            graph.invoke({"question": asked[0]}, context=contexts[e])  # warm-up
        for n, q in enumerate(asked[1:], 1):
            for e in embedders:
                t0 = time.perf_counter()
                graph.invoke({"question": q}, context=contexts[e])
                ask[e].append(time.perf_counter() - t0)
            print(f"\rask {n}/{questions}", end="", file=sys.stderr, flush=True)
        print(file=sys.stderr)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    n = len(records)
    return {e: {"ingest": {"passages": n, "raw_per_s": n / raw[e], "ingest_per_s": n / full[e],
                           "ratio": raw[e] / full[e]},
                "ask_p50_ms": float(np.percentile(ask[e], 50) * 1000),
                "ask_p95_ms": float(np.percentile(ask[e], 95) * 1000)} for e in embedders}


def _get(r: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        if not isinstance(r, dict) or key not in r:
            return None
        r = r[key]
    return r


def table(results: dict[str, dict[str, Any]]) -> str:
    """The comparison; a measurement a run did not finish shows as a dash."""
    def pair(a: Any, b: Any) -> str:
        return "—" if a is None or b is None else f"{a:.1f} / {b:.1f}"

    names = list(results)
    rows = ["| measure | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for direction in TARGETS:
        for mode in ("dense", "full"):
            cells = [pair(_get(r, "xquad", direction, mode, "R@1"), _get(r, "xquad", direction, mode, "R@5"))
                     for r in results.values()]
            goal = f" (target R@1 >= {TARGETS[direction]:.0f})" if mode == "full" else ""
            rows.append(f"| XQuAD {direction} {mode} R@1 / R@5{goal} | " + " | ".join(cells) + " |")
    for name in MULTIHOP:
        cells = [pair(_get(r, "multihop", name, "R@2"), _get(r, "multihop", name, "R@5")) for r in results.values()]
        rows.append(f"| {name} full R@2 / R@5 | " + " | ".join(cells) + " |")

    def ingest(r: dict[str, Any]) -> str:
        i = _get(r, "foundation", "ingest")
        return "—" if not i else f"{i['ingest_per_s']:.1f} ({i['raw_per_s']:.1f}) -> {i['ratio']:.3f}"

    def ask(r: dict[str, Any]) -> str:
        p50, p95 = _get(r, "foundation", "ask_p50_ms"), _get(r, "foundation", "ask_p95_ms")
        return "—" if p50 is None else f"{p50:.0f} / {p95:.0f}"

    rows.append("| ingest passages/s (raw embedder) -> ratio | " + " | ".join(ingest(r) for r in results.values()) + " |")
    rows.append("| `ask` p50 / p95 ms (full graph, extractive) | " + " | ".join(ask(r) for r in results.values()) + " |")
    return "\n".join(rows)


def verdicts(results: dict[str, dict[str, Any]], baseline: str = "all-MiniLM-L6-v2") -> list[str]:
    """Each embedder against the issue's targets (XQuAD full R@1, multi-hop R@5 vs the baseline, ingest ratio)."""
    lines = []
    for name, r in results.items():
        checks = []
        for d, goal in TARGETS.items():
            got = _get(r, "xquad", d, "full", "R@1")
            checks.append(f"{d} not measured" if got is None else f"{d} {got:.1f} {'>=' if got >= goal else '<'} {goal:.0f}")
        if baseline in results and name != baseline:
            for h in MULTIHOP:
                mine, base = _get(r, "multihop", h, "R@5"), _get(results[baseline], "multihop", h, "R@5")
                if mine is not None and base is not None:
                    checks.append(f"{h} R@5 {mine:.1f} vs {base:.1f} ({'ok' if mine >= base - 1.0 else 'falls'})")
        ratio = _get(r, "foundation", "ingest", "ratio")
        if ratio is not None:
            checks.append(f"ingest ratio {ratio:.3f} {'>=' if ratio >= 0.9 else '<'} 0.9")
        lines.append(f"- **{name}**: " + "; ".join(checks))
    return lines


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
        values = [_get(r, "xquad", d, m, "R@1") or 0.0 for d in TARGETS for m in ("dense", "full")]
        values += [_get(r, "multihop", h, "R@5") or 0.0 for h in MULTIHOP]  # unmeasured: no bar
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
    body = f"""Command: `python -m evals.multilingual_report --record --resume evals/.cache/multilingual{limit}` (run {time.strftime("%Y-%m-%d %H:%M UTC",
time.gmtime())}; both embedders in the same run, 2 shared CPU cores; stores cached under evals/.cache).
One direction alone: `python -m evals.xquad --questions ../shared/data/xquad/xquad_dev24.ru.json
--passages ../shared/data/xquad/xquad_dev24.en.json --embedder multilingual-e5-small --json`.
XQuAD dev24: 120 paragraphs and 632 questions per language, paragraphs stored without titles,
gold by parallel position. Multi-hop: `evals.multihop` full mode (2wiki_dev50 pools its own
contexts). Ingest and `ask`: both embedders interleaved in one process — the 300-passage demo corpus
in chunks of 50 (each chunk embedded raw, then ingested, by each embedder in turn), then 30 two-hop
questions each asked of both stores in turn (full graph, extractive decoder).

{table(results)}

Against the targets (XQuAD full R@1; multi-hop full R@5 within 1 point of all-MiniLM-L6-v2's; ingest):

{chr(10).join(verdicts(results))}

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
    ap.add_argument("--resume", type=Path, help="keep each finished measurement here and reuse it on a rerun")
    ap.add_argument("--order", nargs="+", choices=["xquad", "multihop", "foundation"],
                    help="which measurements run first (default: xquad multihop foundation)")
    args = ap.parse_args(argv)
    if args.from_json:
        results = json.loads(args.from_json.read_text(encoding="utf-8").strip().splitlines()[-1])
    else:
        def piece(embedder: str, name: str, measure) -> Any:
            """One measurement, kept under --resume as it finishes so an interrupted run picks up there."""
            saved = args.resume / f"{embedder}.{name}.json" if args.resume else None
            if saved and saved.exists():
                return json.loads(saved.read_text(encoding="utf-8"))
            value = measure()
            if saved:
                saved.parent.mkdir(parents=True, exist_ok=True)
                saved.write_text(json.dumps(value, ensure_ascii=False), encoding="utf-8")
            return value

        results = {embedder: {} for embedder in args.embedders}
        order = args.order or ["xquad", "multihop", "foundation"]
        timings: dict[str, Any] = {}

        def timed(embedder: str) -> dict[str, Any]:
            """Every embedder's timings come from one interleaved run."""
            if not timings:
                timings.update(paired(args.embedders, args.questions))
            return timings[embedder]

        for name in order:
            for embedder in args.embedders:  # one embedder right after the other: a drifting machine hits both
                results[embedder][name] = piece(embedder, name, {
                    "foundation": lambda: timed(embedder),
                    "multihop": lambda: multihop(embedder, args.data),
                    "xquad": lambda: xquad(embedder, args.data, args.xquad_limit)}[name])
    print(table(results))
    plot(results, args.plot)
    if args.record:
        record(results, args, args.plot)
    if args.json:
        print(json.dumps(results, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
