"""Multi-hop retrieval evaluation: passage recall@k of scenemind's retrieval path.

    python -m evals.multihop --questions Q.json [--corpus C.json] [--k 2 5 10]
                             [--mode dense|resonance|full ...] [--limit N] [--json]

Question formats, detected per record:
- MuSiQue style: `paragraphs: [{title, paragraph_text, is_supporting}]`;
- HotpotQA / 2Wiki style: `supporting_facts: [[title, sent_idx], ...]` + `context: [[title, [sentences]], ...]`.
The corpus is optional (the questions' own paragraphs are pooled when absent) and may be
a list of `{title, text}` or a dict `title -> [sentences]`. A passage is title + text;
recall@k per question is |gold ∩ top-k| / |gold|, averaged (HippoRAG's definition).

The corpus is ingested into an isolated store under evals/.cache, keyed by a hash of
its passages, the embedder and the versions of the couplings index and the lexicon's keys,
so reruns skip ingestion and a changed lexicon never reuses a stale index (a store of the
same passages and embedder from older versions keeps its vectors; its index is rebuilt). Each question runs through the graph's
retrieval path (`build_graph(retrieval_only=True)`: interpret → build_scene →
resonate → expand ⇄ probe), ranked by final activation. Modes:
- dense: one dense search in the store, nothing else (the one-shot baseline);
- resonance: dense + lexical seeds (BM25, entity/title match) + activation spreading, no probes;
- full: resonance + delta expansion into probes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from adapters.embedder import DEFAULT_EMBEDDER

CACHE = Path(__file__).resolve().parent / ".cache"
MODES = ("dense", "resonance", "full")


@dataclass
class Question:
    id: str
    text: str
    gold: list[tuple[str, str]]  # (title, text)
    hops: int
    pool: list[tuple[str, str]]  # the question's own paragraphs


def _squash(text: str) -> str:
    """Whitespace-free form: corpora join sentences differently, the words are the same."""
    return re.sub(r"\s+", "", text)


def passage_key(title: str, text: str) -> str:
    return title.strip() + "\n" + _squash(text)


def parse_question(raw: dict[str, Any], n: int) -> Question:
    qid = str(raw.get("id", raw.get("_id", n)))
    text = raw["question"]
    if "paragraphs" in raw:  # MuSiQue
        pool = [(p["title"], p["paragraph_text"]) for p in raw["paragraphs"]]
        gold = [(p["title"], p["paragraph_text"]) for p in raw["paragraphs"] if p.get("is_supporting")]
        hops = len(raw.get("question_decomposition") or []) or len(gold)
    elif "supporting_facts" in raw and "context" in raw:  # HotpotQA / 2Wiki
        pool = [(t, " ".join(s.strip() for s in sents) if isinstance(sents, list) else sents)
                for t, sents in raw["context"]]
        titles = {t for t, _ in raw["supporting_facts"]}
        gold = [(t, x) for t, x in pool if t in titles]
        hops = len(titles)
    else:
        raise ValueError(f"question {n}: neither MuSiQue (paragraphs) nor HotpotQA/2Wiki (supporting_facts + context)")
    return Question(qid, text, gold, hops, pool)


def load_questions(path: str) -> list[Question]:
    raw = json.loads(Path(path).read_text(encoding="utf-8"))
    if isinstance(raw, dict):
        raw = raw.get("data", list(raw.values()))
    return [parse_question(r, n) for n, r in enumerate(raw)]


def load_corpus(path: str | None, questions: list[Question]) -> list[tuple[str, str]]:
    if path is None:
        pooled: dict[str, tuple[str, str]] = {}
        for q in questions:
            for title, text in q.pool:
                pooled.setdefault(passage_key(title, text), (title, text))
        return list(pooled.values())
    raw = json.loads(Path(path).read_text(encoding="utf-8"))
    if isinstance(raw, dict):
        return [(t, " ".join(s) if isinstance(s, list) else s) for t, s in raw.items()]
    return [(p["title"], p.get("text", p.get("paragraph_text", ""))) for p in raw]


VECTORS_OF = "vectors-of"  # in each cached store: the hash of its embedder and passages


def _digest(prefix: str, records: list) -> str:
    digest = hashlib.sha256(prefix.encode())
    for r in records:
        digest.update(r.scene_id.encode())
    return digest.hexdigest()[:16]


def _reuse_vectors(cache: Path, vectors_key: str, data_dir: Path, embedder: str) -> None:
    """Move a cached store of the same passages and embedder from older index/key versions to `data_dir`
    and rebuild its couplings index from its scenes (embedding is the slow part; keys are quick)."""
    from adapters.store_health import repair

    older = [d for d in cache.glob("*") if (d / VECTORS_OF).is_file() and (d / VECTORS_OF).read_text() == vectors_key]
    if (cache / vectors_key).is_dir():  # cached before the key held versions: named by the vectors' hash
        older.append(cache / vectors_key)
    if older:
        print(f"reusing the vectors of {older[0]}: rebuilding its couplings index", file=sys.stderr)
        older[0].rename(data_dir)
        for stale in data_dir.glob("couplings.sqlite*"):  # the index (and its WAL) is derived: rebuilt below
            stale.unlink()
        repair(str(data_dir), embedder)


def build_store(corpus: list[tuple[str, str]], embedder: str, cache: Path = CACHE) -> tuple[str, dict[str, str]]:
    """An isolated, cached store for this corpus; and passage key -> scene id."""
    from adapters.coupling_index import SCHEMA_VERSION
    from adapters.lexicon import KEYS_VERSION
    from adapters.memory import open_memory
    from adapters.sources import SceneRecord

    records = [SceneRecord(text=text.strip(), title=title.strip() or None) for title, text in corpus if text.strip()]
    vectors_key = _digest(embedder, records)  # what the vectors depend on
    data_dir = cache / _digest(f"{embedder}|couplings {SCHEMA_VERSION}|keys {KEYS_VERSION}", records)
    if not data_dir.exists():
        _reuse_vectors(cache, vectors_key, data_dir, embedder)
    mem = open_memory(str(data_dir), embedder, create=True)
    (data_dir / VECTORS_OF).write_text(vectors_key)
    total = len(records)

    def progress(n: int, done=[0]) -> None:  # noqa: B006 - a counter local to this call
        done[0] += n
        print(f"\ringest {done[0]}/{total}", end="", file=sys.stderr, flush=True)

    report = mem.ingest(records, progress=progress)
    print(f"\ringest: {report.added} added, {report.already_present} cached -> {data_dir}", file=sys.stderr)
    return str(data_dir), {passage_key(r.title or "", r.text): r.scene_id for r in records}


def mode_context(mode: str, base):
    """The Context overrides that define each mode."""
    if mode == "dense":
        return replace(base, bm25_weight=0.0, title_weight=0.0, mention_weight=0.0, spread_weight=0.0,
                       max_depth=0, crystal_weight=0.0)
    if mode == "resonance":
        return replace(base, max_depth=0)
    return base


def evaluate(questions: list[Question], ids: dict[str, str], ctx, ks: list[int]) -> dict[str, Any]:
    from graph.builder import build_graph

    retrieval = build_graph(retrieval_only=True)
    per_q, latencies = [], []
    for n, q in enumerate(questions, 1):
        gold = {ids.get(passage_key(t, x)) for t, x in q.gold} - {None}
        start = time.perf_counter()
        out = retrieval.invoke({"question": q.text}, context=ctx)
        latencies.append(time.perf_counter() - start)
        ranked = [r.id for r in sorted(out["active"].values(), key=lambda r: -r.score)]
        rank = {sid: n for n, sid in enumerate(ranked, 1)}
        per_q.append({"id": q.id, "hops": q.hops, "gold": len(gold), "retrievals": out["retrievals"],
                      # each gold passage's title and its place in the final ranking (None: not reached)
                      "gold_ranks": [[t, rank.get(ids.get(passage_key(t, x), ""))] for t, x in q.gold],
                      **{f"R@{k}": len(gold & set(ranked[:k])) / len(gold) if gold else 0.0 for k in ks}})
        print(f"\r{n}/{len(questions)}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return summarise(per_q, latencies, ks)


def summarise(per_q: list[dict], latencies: list[float], ks: list[int]) -> dict[str, Any]:
    def mean(rows: list[dict], key: str) -> float:
        return round(100 * float(np.mean([r[key] for r in rows])), 1) if rows else 0.0

    by_hop: dict[int, list[dict]] = defaultdict(list)
    for r in per_q:
        by_hop[r["hops"]].append(r)
    return {
        "questions": len(per_q),
        **{f"R@{k}": mean(per_q, f"R@{k}") for k in ks},
        "by_hops": {str(h): {"n": len(rows), **{f"R@{k}": mean(rows, f"R@{k}") for k in ks}}
                    for h, rows in sorted(by_hop.items())},
        "latency_ms": {"p50": round(1000 * float(np.percentile(latencies, 50)), 1),
                       "p95": round(1000 * float(np.percentile(latencies, 95)), 1)},
        "retrievals_mean": round(float(np.mean([r["retrievals"] for r in per_q])), 2),
        "per_question": [{"id": r["id"], "gold_ranks": r["gold_ranks"]} for r in per_q if "gold_ranks" in r],
    }


def print_table(results: dict[str, dict], ks: list[int]) -> None:
    head = " | ".join(f"R@{k}" for k in ks)
    print(f"| mode | {head} | p50 ms | p95 ms | store queries |")
    print("|---|" + "---|" * (len(ks) + 3))
    for mode, res in results.items():
        cells = " | ".join(f"{res[f'R@{k}']:.1f}" for k in ks)
        print(f"| {mode} | {cells} | {res['latency_ms']['p50']:.0f} | {res['latency_ms']['p95']:.0f} | "
              f"{res['retrievals_mean']:.1f} |")
    for mode, res in results.items():
        for hops, row in res["by_hops"].items():
            cells = " ".join(f"R@{k} {row[f'R@{k}']:.1f}" for k in ks)
            print(f"  {mode} {hops}-hop (n={row['n']}): {cells}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--questions", required=True)
    ap.add_argument("--corpus")
    ap.add_argument("--k", type=int, nargs="+", default=[2, 5, 10])
    ap.add_argument("--mode", nargs="+", choices=MODES, default=list(MODES))
    ap.add_argument("--limit", type=int, help="first N questions only")
    ap.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE", help="Context overrides, e.g. top_k=10")
    ap.add_argument("--embedder", default=DEFAULT_EMBEDDER)
    ap.add_argument("--cache", type=Path, default=CACHE, help="where ingested eval stores are kept")
    ap.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = ap.parse_args(argv)

    from state.context import Context

    questions = load_questions(args.questions)[: args.limit]
    corpus = load_corpus(args.corpus, questions)
    data_dir, ids = build_store(corpus, args.embedder, args.cache)
    missing = sum(1 for q in questions for t, x in q.gold if passage_key(t, x) not in ids)
    if missing:
        print(f"warning: {missing} gold passages are not in the corpus (they count as misses)", file=sys.stderr)
    overrides = dict(item.split("=", 1) for item in args.set)
    base = Context(data_dir=data_dir, embedder=args.embedder)
    for field_name, value in overrides.items():
        kind = type(getattr(base, field_name))
        base = replace(base, **{field_name: kind(value)})
    results = {}
    for mode in args.mode:
        print(f"mode {mode}", file=sys.stderr)
        results[mode] = evaluate(questions, ids, mode_context(mode, base), args.k)
    print_table(results, args.k)
    if args.json:
        print(json.dumps({"questions": args.questions, "corpus": args.corpus, "passages": len(corpus),
                          "modes": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
