"""One memory, two homes: the embedded store against a Chroma server + PostgreSQL (`--store-url` + `--state-url`).

Ingests a multi-hop set's passages into both, runs full-mode retrieval on the same questions
through each and compares: recall and every question's gold ranks must be identical; latency is
what the servers cost. Then a second process's view (another Memory on another data dir, same
servers) loads its coupling graph cold and catches up after the first adds a batch of scenes and
forgets them again; its retrieval must then equal the first's.

    python -m evals.shared_state --questions tests/data/musique_10.json \
        --store-url http://127.0.0.1:8000 --state-url postgresql://postgres@127.0.0.1:5432/scenemind

The servers are yours (`chroma run --path DIR`, a PostgreSQL database): both must hold no other memory.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from evals.multihop import CACHE, build_store, evaluate, load_corpus, load_questions, mode_context

EMBEDDER = "all-MiniLM-L6-v2"
SAME = ("R@2", "R@5", "R@10", "by_hops", "per_question")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--questions", required=True)
    ap.add_argument("--corpus")
    ap.add_argument("--store-url", required=True, help="a Chroma server that holds no other memory")
    ap.add_argument("--state-url", required=True, help="a PostgreSQL database that holds no other memory")
    ap.add_argument("--embedder", default=EMBEDDER)
    ap.add_argument("--churn", type=int, default=100, help="scenes the first process adds and forgets again")
    ap.add_argument("--cache", type=Path, default=CACHE)
    ap.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = ap.parse_args(argv)

    from adapters.memory import Memory, open_memory
    from adapters.sources import SceneRecord
    from state.context import Context

    questions = load_questions(args.questions)
    corpus = load_corpus(args.corpus, questions)
    data_dir, ids = build_store(corpus, args.embedder, args.cache)
    embedded = Context(data_dir=data_dir, embedder=args.embedder)
    served_dir = tempfile.mkdtemp(prefix="scenemind-shared-a-")
    served = Context(data_dir=served_dir, embedder=args.embedder, store_url=args.store_url,
                     state_url=args.state_url)
    records = [SceneRecord(text=text.strip(), title=title.strip() or None) for title, text in corpus if text.strip()]
    writer = open_memory(served_dir, args.embedder, store_url=args.store_url, state_url=args.state_url, create=True)
    started = time.perf_counter()
    report = writer.ingest(records, progress=None)
    ingest_s = time.perf_counter() - started
    print(f"ingest into the servers: {report.added} added, {report.already_present} present ({ingest_s:.1f} s)",
          file=sys.stderr)

    # A first pass embeds the questions and probes (the process caches their vectors) and opens both stores,
    # so that the passes measured next compare retrieval alone, each warm.
    print("warm-up pass", file=sys.stderr)
    evaluate(questions, ids, mode_context("full", embedded), [2, 5, 10])
    results = {}
    for name, ctx in (("embedded", embedded), ("servers", served)):
        print(f"retrieval ({name})", file=sys.stderr)
        results[name] = evaluate(questions, ids, mode_context("full", ctx), [2, 5, 10])
    same = {k: results["embedded"][k] for k in SAME} == {k: results["servers"][k] for k in SAME}

    # Another process's view: its own data dir, its own index connection and graph, the same servers.
    other = Memory(tempfile.mkdtemp(prefix="scenemind-shared-b-"), writer.embedder, store_url=args.store_url,
                   state_url=args.state_url)
    t0 = time.perf_counter()
    other.couplings.graph()
    cold_s = time.perf_counter() - t0
    extra = [SceneRecord(text=f"{r.text} (copy {n})", title=r.title) for n, r in enumerate(records[: args.churn])]
    writer.ingest(extra, source="evals.shared_state churn")
    t0 = time.perf_counter()
    after_add = other.couplings.graph().n
    add_s = time.perf_counter() - t0
    writer.forget(source="evals.shared_state churn")
    t0 = time.perf_counter()
    after_forget = other.couplings.graph().n
    forget_s = time.perf_counter() - t0
    again = evaluate(questions, ids, mode_context("full", replace(served, data_dir=str(other.data_dir))), [2, 5, 10])
    same_after = {k: again[k] for k in SAME} == {k: results["embedded"][k] for k in SAME}

    print(f"\n{len(questions)} questions, {len(records)} passages, full mode, {args.embedder} (latency: warm, "
          "question and probe vectors cached)")
    print("| memory | R@2 | R@5 | R@10 | p50 ms | p95 ms |\n|---|---|---|---|---|---|")
    for name, res in (*results.items(), ("servers, second process after the churn", again)):
        print(f"| {name} | {res['R@2']} | {res['R@5']} | {res['R@10']} | {res['latency_ms']['p50']} | "
              f"{res['latency_ms']['p95']} |")
    print(f"identical recall and gold ranks, embedded vs servers: {same}; second process after the churn: "
          f"{same_after}")
    print(f"second process: cold graph load {1000 * cold_s:.0f} ms ({len(records)} scenes); catch-up after "
          f"{args.churn} added elsewhere {1000 * add_s:.0f} ms (n={after_add}); after they were forgotten "
          f"{1000 * forget_s:.0f} ms (n={after_forget})")
    if args.json:
        print(json.dumps({"questions": args.questions, "passages": len(records), "results": results,
                          "after_churn": again, "same": same, "same_after_churn": same_after,
                          "ingest_s": ingest_s, "cold_ms": 1000 * cold_s, "catch_up_add_ms": 1000 * add_s,
                          "catch_up_forget_ms": 1000 * forget_s}))
    return 0 if same and same_after else 1


if __name__ == "__main__":
    sys.exit(main())
