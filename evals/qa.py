"""Answer quality of the whole graph: short answers and their evidence, no LLM.

    python -m evals.qa --questions Q.json [--corpus C.json] [--limit N] [--json] [--record NAME]
    python -m evals.qa --questions xquad.ru.json --memory xquad.en.json   # questions over memory in another language
    python -m evals.qa --report          # every recorded run -> evals/RESULTS.md section + evals/qa.png

Question files, detected per file: MuSiQue, HotpotQA / 2Wiki (the formats `evals.multihop`
reads) and SQuAD (`data[].paragraphs[].qas[]`, e.g. XQuAD; the paragraphs are the corpus,
titled by their article). Each question runs through the full graph with the default
(extractive) decoder and `write_back` off, in a store cached under evals/.cache that the
multi-hop eval shares: nothing is written into it.

Reported, overall and by question type (the file's `type`, else the hop count):
- `em`, `f1`: exact match and token F1 of `answer` against the gold answer and its aliases,
  SQuAD/HotpotQA normalisation (lower case, no punctuation, no articles);
- `evidence_precision`, `evidence_recall`: evidence sentences against the sentence-level
  supporting facts `[title, sentence index]` where the file has them (an evidence sentence
  counts when its title matches and it holds, or is held by, a gold sentence);
- `passage_recall`: gold passages among the evidence's scenes;
- `abstained`: answers that say the answer is not in memory (or hold no evidence); latency p50/p95 of a whole run
  and of the decode node alone (what the answer reader adds to an ask).
All figures are percentages except latency. On a build from before answers carried evidence,
the sentences its answer quotes ("text [scene id]") are read as its evidence: that is how the
baseline in RESULTS.md (the three quoted sentences) was measured.
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import string
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from adapters.embedder import DEFAULT_EMBEDDER
from evals.multihop import CACHE, build_store, load_corpus, parse_question, passage_key

RECORDS = Path(__file__).resolve().parent / "qa_runs"
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


# --- gold -------------------------------------------------------------------------------------
def over_memory(items: list[dict[str, Any]], held: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Questions of one SQuAD file asked of a parallel file's paragraphs (XQuAD ru over en): the gold answers
    and passages are the memory file's, matched by question id (an extractive answer is in memory's language)."""
    by_id = {i["id"]: i for i in held}
    return [{**i, "answers": by_id[i["id"]]["answers"], "gold_passages": by_id[i["id"]]["gold_passages"]}
            for i in items if i["id"] in by_id]


def load_items(path: str) -> tuple[list[dict[str, Any]], list[tuple[str, str]] | None]:
    """Questions with gold answers, gold passages and gold sentences; and the corpus a SQuAD file holds."""
    raw = json.loads(Path(path).read_text(encoding="utf-8"))
    if isinstance(raw, dict) and isinstance(raw.get("data"), list) and raw["data"] and "paragraphs" in raw["data"][0]:
        items, corpus = [], []
        for article in raw["data"]:
            title = article.get("title", "").replace("_", " ").strip()
            for para in article["paragraphs"]:
                corpus.append((title, para["context"]))
                for qa in para["qas"]:
                    items.append({"id": qa["id"], "question": qa["question"], "type": "single-hop",
                                  "answers": [a["text"] for a in qa.get("answers", [])],
                                  "gold_passages": [(title, para["context"])], "gold_sentences": []})
        return items, corpus
    if isinstance(raw, dict):
        raw = raw.get("data", list(raw.values()))
    items = []
    for n, record in enumerate(raw):
        q = parse_question(record, n)
        context = {t: sents for t, sents in record.get("context", [])}
        sentences = [(t, context[t][i]) for t, i in record.get("supporting_facts", [])
                     if t in context and isinstance(context[t], list) and i < len(context[t])]
        items.append({"id": q.id, "question": q.text, "type": record.get("type") or f"{q.hops}-hop",
                      "answers": [record.get("answer", "")] + list(record.get("answer_aliases", []) or []),
                      "gold_passages": q.gold, "gold_sentences": sentences, "pool": q.pool})
    return items, None


# --- scoring ----------------------------------------------------------------------------------
def normalize(text: str) -> str:
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation) | {"«", "»", "“", "”", "’"})
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def token_f1(prediction: str, gold: str) -> float:
    pred, true = normalize(prediction).split(), normalize(gold).split()
    if not pred or not true:
        return float(pred == true)
    if {normalize(prediction), normalize(gold)} & {"yes", "no"}:
        return float(normalize(prediction) == normalize(gold))
    common = sum((collections.Counter(pred) & collections.Counter(true)).values())
    if not common:
        return 0.0
    precision, recall = common / len(pred), common / len(true)
    return 2 * precision * recall / (precision + recall)


def _squash(text: str) -> str:
    return re.sub(r"\W+", "", text.lower())


def _same_sentence(said: str, gold: str) -> bool:
    a, b = _squash(said), _squash(gold)
    return bool(a and b) and (a in b or b in a)


def quoted_evidence(out: dict[str, Any]) -> list[SimpleNamespace]:
    """The evidence of a build from before `evidence` existed: each sentence its answer quoted, "text [id]"."""
    active = out.get("active", {})
    return [SimpleNamespace(scene_id=sid, title=active[sid].title if sid in active else None, text=text.strip(),
                            role="answer")
            for text, sid in re.findall(r"(.+?)\s*\[([^\[\]\s]+)\]\s*", out.get("answer", ""))]


def score_item(item: dict[str, Any], out: dict[str, Any], passage_ids: dict[str, str]) -> dict[str, Any]:
    answers = [a for a in item["answers"] if a] or [""]
    answer = out.get("answer", "")
    evidence = out["evidence"] if "evidence" in out else quoted_evidence(out)
    row: dict[str, Any] = {
        "id": item["id"], "type": item["type"], "question": item["question"], "answer": answer,
        "gold": answers[0], "em": max(float(normalize(answer) == normalize(g)) for g in answers),
        "f1": max(token_f1(answer, g) for g in answers), "abstained": float(not evidence or all(e.role == "closest" for e in evidence)),
    }
    gold_sentences = item["gold_sentences"]
    if gold_sentences:
        hit = [e for e in evidence if any(normalize(e.title or "") == normalize(t) and _same_sentence(e.text, s)
                                          for t, s in gold_sentences)]
        covered = [g for g in gold_sentences if any(normalize(e.title or "") == normalize(g[0])
                                                    and _same_sentence(e.text, g[1]) for e in evidence)]
        row["evidence_precision"] = len(hit) / len(evidence) if evidence else 0.0
        row["evidence_recall"] = len(covered) / len(gold_sentences)
    gold_ids = {passage_ids.get(passage_key(t, x)) for t, x in item["gold_passages"]} - {None}
    if gold_ids:
        row["passage_recall"] = len(gold_ids & {e.scene_id for e in evidence}) / len(gold_ids)
    return row


def _percentiles(seconds: list[float]) -> dict[str, float]:
    return {"p50": round(1000 * float(np.percentile(seconds, 50)), 1),
            "p95": round(1000 * float(np.percentile(seconds, 95)), 1)} if seconds else {"p50": 0.0, "p95": 0.0}


def summarise(rows: list[dict[str, Any]], latencies: list[float], decoding: list[float]) -> dict[str, Any]:
    def block(group: list[dict[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {"n": len(group)}
        for key in ("em", "f1", "evidence_precision", "evidence_recall", "passage_recall", "abstained"):
            values = [r[key] for r in group if key in r]
            out[key] = round(100 * float(np.mean(values)), 1) if values else None
        return out

    by_type: dict[str, list] = collections.defaultdict(list)
    for r in rows:
        by_type[r["type"]].append(r)
    return {**block(rows), "latency_ms": _percentiles(latencies), "decode_ms": _percentiles(decoding),
            "by_type": {t: block(g) for t, g in sorted(by_type.items())}}


# --- running ----------------------------------------------------------------------------------
def evaluate(items: list[dict[str, Any]], corpus: list[tuple[str, str]], embedder: str, cache: Path,
             verbose: bool = False) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    from graph.builder import build_graph
    from state.context import Context

    data_dir, ids = build_store(corpus, embedder, cache)
    graph = build_graph()  # the whole graph, default decoder; write_back stays off: the store stays clean
    # Read-only runs; a build from before `write_back` existed (the baseline) writes into its own --cache.
    read_only = {"write_back": False} if "write_back" in Context.__dataclass_fields__ else {}
    ctx = Context(data_dir=data_dir, embedder=embedder, **read_only)
    rows, latencies, decoding = [], [], []
    for n, item in enumerate(items, 1):
        start = last = time.perf_counter()
        out: dict[str, Any] = {}
        for mode, chunk in graph.stream({"question": item["question"]}, context=ctx, stream_mode=["updates", "values"]):
            if mode == "values":
                out = chunk
                continue
            now = time.perf_counter()
            if "decode" in chunk:  # an update arrives when its node ends: decode ran since the previous one
                decoding.append(now - last)
            last = now
        latencies.append(time.perf_counter() - start)
        rows.append(score_item(item, out, ids))
        if verbose:
            r = rows[-1]
            print(f"{r['f1']:.2f} | {item['question'][:80]} | {r['answer'][:40]} | gold {r['gold'][:40]}",
                  file=sys.stderr)
        print(f"\rqa {n}/{len(items)}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return summarise(rows, latencies, decoding), rows


def print_table(summary: dict[str, Any]) -> None:
    def cell(v):
        return "–" if v is None else f"{v:.1f}"

    print("| type | n | EM | F1 | evidence P | evidence R | passage R | abstained |")
    print("|---|---|---|---|---|---|---|---|")
    for name, b in [("all", summary), *summary["by_type"].items()]:
        print(f"| {name} | {b['n']} | {cell(b['em'])} | {cell(b['f1'])} | {cell(b['evidence_precision'])} | "
              f"{cell(b['evidence_recall'])} | {cell(b['passage_recall'])} | {cell(b['abstained'])} |")
    print(f"latency p50 {summary['latency_ms']['p50']:.0f} ms, p95 {summary['latency_ms']['p95']:.0f} ms; "
          f"decode p50 {summary['decode_ms']['p50']:.0f} ms, p95 {summary['decode_ms']['p95']:.0f} ms")


def report(records: Path = RECORDS, results: Path = RESULTS, note: str = "") -> str:
    """Every recorded run as one RESULTS.md section and a PNG of F1 / evidence per set."""
    from evals.results import replace_section

    runs = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(records.glob("*.json"))]
    if not runs:
        raise SystemExit(f"no recorded runs in {records}: run with --record NAME first")
    lines = ["Short answers with their evidence chain, default (extractive) decoder, no language model; the whole "
             "graph per question, nothing written back. Commands:", "", "```"]
    lines += [r["command"] for r in runs]
    lines += ["python -m evals.qa --report", "```", "",
              "| set | n | EM | F1 | evidence P | evidence R | passage R | abstained | ask p50 / p95 ms | decode p50 / p95 ms |",
              "|---|---|---|---|---|---|---|---|---|---|"]

    def cell(v):
        return "–" if v is None else f"{v:.1f}"

    for r in runs:
        s = r["summary"]
        lines.append(f"| {r['name']} | {s['n']} | {cell(s['em'])} | {cell(s['f1'])} | {cell(s['evidence_precision'])} "
                     f"| {cell(s['evidence_recall'])} | {cell(s['passage_recall'])} | {cell(s['abstained'])} | "
                     f"{s['latency_ms']['p50']:.0f} / {s['latency_ms']['p95']:.0f} | "
                     f"{s['decode_ms']['p50']:.0f} / {s['decode_ms']['p95']:.0f} |")
    lines += ["", "By question type (F1 / evidence P / evidence R):", ""]
    for r in runs:
        parts = [f"{t} (n={b['n']}) {cell(b['f1'])} / {cell(b['evidence_precision'])} / {cell(b['evidence_recall'])}"
                 for t, b in r["summary"]["by_type"].items()]
        lines.append(f"- {r['name']}: " + "; ".join(parts))
    png = results.parent / "qa.png"
    _plot(runs, png)
    if note:
        lines += ["", note]
    lines += ["", f"![answer F1 and evidence per set]({png.name})"]
    body = "\n".join(lines)
    replace_section(results, "Answers and evidence", body)
    return body


def _plot(runs: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["name"] for r in runs]
    metrics = [("f1", "answer F1"), ("em", "exact match"), ("evidence_precision", "evidence P"),
               ("evidence_recall", "evidence R")]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(names)), 4))
    for n, (key, label) in enumerate(metrics):
        ax.bar(x + (n - 1.5) * 0.2, [r["summary"][key] or 0 for r in runs], 0.2, label=label)
    ax.set_xticks(x, names, rotation=15)
    ax.set_ylabel("%")
    ax.set_ylim(0, 100)
    ax.set_title("scenemind answers, extractive decoder (no LLM)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--questions")
    ap.add_argument("--corpus", help="passages to ingest (default: the questions' own paragraphs)")
    ap.add_argument("--memory", help="a parallel SQuAD file (same question ids, e.g. another language): its "
                    "paragraphs are memory and its answers the gold")
    ap.add_argument("--limit", type=int, help="first N questions only")
    ap.add_argument("--embedder", default=DEFAULT_EMBEDDER)
    ap.add_argument("--cache", type=Path, default=CACHE, help="where ingested eval stores are kept")
    ap.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    ap.add_argument("--record", metavar="NAME", help=f"keep this run's figures in {RECORDS.name}/NAME.json")
    ap.add_argument("--report", action="store_true", help="write every recorded run into RESULTS.md + PNG")
    ap.add_argument("--note", default="", help="with --report: a paragraph under the table (conditions, caveats)")
    ap.add_argument("--verbose", action="store_true", help="one line per question on stderr")
    args = ap.parse_args(argv)
    if args.report:
        print(report(note=args.note))
        return 0
    if not args.questions:
        ap.error("--questions is required (or --report)")
    items, squad_corpus = load_items(args.questions)
    if args.memory:
        held, squad_corpus = load_items(args.memory)
        if squad_corpus is None:
            ap.error("--memory must be a SQuAD-format file (data[].paragraphs[].qas[])")
        items = over_memory(items, held)
    items = items[: args.limit] if args.limit else items
    corpus = squad_corpus if squad_corpus is not None and not args.corpus else None
    if corpus is None:
        from evals.multihop import Question

        pool = [Question(i["id"], i["question"], i["gold_passages"], 0, i.get("pool", i["gold_passages"]))
                for i in items]
        corpus = load_corpus(args.corpus, pool)
    summary, _ = evaluate(items, corpus, args.embedder, args.cache, args.verbose)
    print_table(summary)
    if args.record:
        RECORDS.mkdir(exist_ok=True)
        command = "python -m evals.qa " + " ".join(a for a in (argv if argv is not None else sys.argv[1:]))
        (RECORDS / f"{args.record}.json").write_text(json.dumps(
            {"name": args.record, "command": command, "summary": summary}, indent=1), encoding="utf-8")
    if args.json:
        print(json.dumps({"questions": args.questions, "corpus": args.corpus, "memory": args.memory, **summary}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
