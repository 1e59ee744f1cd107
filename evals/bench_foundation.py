"""Foundation benchmark: ingest throughput vs the raw embedder, and `ask` latency per node.

    python -m evals.bench_foundation [--questions 30] [--json]

Ingest: the demo corpus (or --corpus FILE) into fresh stores, median of 3 alternating runs, divided by the raw
embedder's throughput on the same passage texts in the same process (goal >= 0.9).
Ask: two-hop questions built from the demo corpus's film -> director pairs, each run
through the compiled graph; per-node wall time from the `tasks` stream (parallel probe
tasks are summed per run), p50/p95 per node and in total.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from adapters.memory import Memory, passage_text
from adapters.embedder import load_embedder
from adapters.sources import read_sources
from scenemind_data import DEMO_SCENES


def ingest_ratio(corpus: str, data_dir: Path, repeats: int = 3, embedder_spec: str = "") -> dict[str, float]:
    """Median of `repeats` alternating runs of the raw embedder and of a full ingest into a fresh store.

    Alternating runs, and medians, because a shared 2-core machine drifts by +-20% between
    consecutive runs of the same work.
    """
    records = read_sources([corpus])
    embedder = load_embedder(embedder_spec) if embedder_spec else load_embedder()
    texts = [passage_text(r.title, r.text) for r in records]
    embedder.embed(texts[:32])  # warm both paths equally
    raw, full = [], []
    for n in range(repeats):
        start = time.perf_counter()
        embedder.embed(texts)
        raw.append(time.perf_counter() - start)
        mem = Memory(str(data_dir / f"run{n}"), embedder, create=True)
        start = time.perf_counter()
        mem.ingest(records)
        full.append(time.perf_counter() - start)
        print(f"ingest run {n + 1}/{repeats}: raw {raw[-1]:.2f}s, ingest {full[-1]:.2f}s", file=sys.stderr)
    raw_s, full_s = float(np.median(raw)), float(np.median(full))
    return {"passages": len(records), "raw_per_s": len(records) / raw_s, "ingest_per_s": len(records) / full_s,
            "ratio": raw_s / full_s}


def demo_questions(n: int) -> list[str]:
    rows = [json.loads(line) for line in DEMO_SCENES.read_text().splitlines()]
    films = [r["title"] for r in rows[:120:2]]  # the slice starts with film, director pairs
    return [f"Where was the director of the film {t} born?" for t in films[:n]]


def ask_latency(data_dir: Path, questions: list[str], embedder_spec: str = "") -> dict[str, dict[str, float]]:
    from graph import graph
    from state.context import Context

    ctx = Context(data_dir=str(data_dir), **({"embedder": embedder_spec} if embedder_spec else {}))
    graph.invoke({"question": questions[0]}, context=ctx)  # warm-up: loads nothing new afterwards
    per_node: dict[str, list[float]] = defaultdict(list)
    for n, q in enumerate(questions, 1):
        started: dict[str, float] = {}
        spent: dict[str, float] = defaultdict(float)
        t0 = time.perf_counter()
        for ev in graph.stream({"question": q}, context=ctx, stream_mode="tasks"):
            now = time.perf_counter()
            if "result" in ev or "error" in ev:
                spent[ev["name"]] += now - started.pop(ev["id"], now)
            else:
                started[ev["id"]] = now
        spent["total"] = time.perf_counter() - t0
        for node, s in spent.items():
            per_node[node].append(s)
        print(f"\rask {n}/{len(questions)}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return {node: {"p50_ms": float(np.percentile(v, 50) * 1000), "p95_ms": float(np.percentile(v, 95) * 1000)}
            for node, v in per_node.items()}


def plot(latency: dict[str, dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nodes = [n for n in latency if n != "total"]
    x = np.arange(len(nodes))
    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.bar(x - 0.2, [latency[n]["p50_ms"] for n in nodes], 0.4, label="p50")
    ax.bar(x + 0.2, [latency[n]["p95_ms"] for n in nodes], 0.4, label="p95")
    ax.set_xticks(x, nodes, rotation=20)
    ax.set_ylabel("ms per run")
    ax.set_title(f"scenemind ask latency per node (total p50 {latency['total']['p50_ms']:.0f} ms)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def record(ingest: dict[str, float], latency: dict[str, dict[str, float]], args: argparse.Namespace) -> None:
    from evals.results import replace_section

    rows = "\n".join(f"| {node} | {v['p50_ms']:.1f} | {v['p95_ms']:.1f} |" for node, v in latency.items())
    body = f"""Command: `python -m evals.bench_foundation --questions {args.questions} --record`
(run {time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}; corpus `{Path(args.corpus).name}`).

Ingest of {ingest['passages']} passages into a fresh store: {ingest['ingest_per_s']:.1f} passages/s; the raw
embedder on the same texts in the same process: {ingest['raw_per_s']:.1f} passages/s -> **ratio
{ingest['ratio']:.3f}** (goal >= 0.9).

`ask` latency on that store ({args.questions} two-hop questions, full graph, extractive decoder;
per node from the `tasks` stream, parallel probes summed per run):

| node | p50 ms | p95 ms |
|---|---|---|
{rows}

Plot: `evals/ask_latency.png`."""
    replace_section(Path(__file__).with_name("RESULTS.md"), "Foundation: ingest throughput and ask latency", body)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default=str(DEMO_SCENES))
    ap.add_argument("--questions", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=3, help="alternating ingest runs (the median is reported)")
    ap.add_argument("--plot", default=str(Path(__file__).with_name("ask_latency.png")))
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--record", action="store_true", help="replace the section in evals/RESULTS.md")
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="scenemind-bench-"))
    try:
        ingest = ingest_ratio(args.corpus, tmp / "ingest", repeats=args.repeats)
        print(f"ingest {ingest['passages']} passages: {ingest['ingest_per_s']:.1f}/s vs raw embedder "
              f"{ingest['raw_per_s']:.1f}/s -> ratio {ingest['ratio']:.3f}")
        latency = ask_latency(tmp / "ingest" / "run0", demo_questions(args.questions))
        print("| node | p50 ms | p95 ms |\n|---|---|---|")
        for node, v in latency.items():
            print(f"| {node} | {v['p50_ms']:.1f} | {v['p95_ms']:.1f} |")
        if args.plot:
            plot(latency, Path(args.plot))
            print(f"plot: {args.plot}")
        if args.record:
            record(ingest, latency, args)
        if args.json:
            print(json.dumps({"ingest": ingest, "latency": latency}))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
