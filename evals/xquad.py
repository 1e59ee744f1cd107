"""Paragraph retrieval within and across languages (XQuAD or any SQuAD-format pair of files).

    python -m evals.xquad --questions Q.json --passages P.json [--mode dense|full ...] [--k 1 5]
                          [--embedder NAME] [--limit N] [--json]

Questions come from one file, paragraphs from the other; the gold paragraph of a question
is the paragraph at the same position (article, paragraph) in the passages file, so the
two files must be parallel (XQuAD's languages are; the same file twice is one language).
Paragraphs are stored without their article title (the gold is one of several
paragraphs under a title, and XQuAD's titles are English in every language). Each
question runs through the graph's retrieval path as `evals.multihop` runs it (store
cached under evals/.cache, keyed by embedder and passages); R@k is the share of
questions whose paragraph is in the top k. `--json` prints one JSON object as the
last line: {"modes": {"dense": {"R@1": .., "R@5": ..}, "full": {..}}, ...} (percentages).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from evals.multihop import CACHE, Question, build_store, evaluate, mode_context

MODES = ("dense", "resonance", "full")


class XquadInputError(ValueError):
    """A file that is not a SQuAD-format pair member; said in one line."""


def _clean(text: str) -> str:
    return text.replace("\ufeff", "").strip()  # a few XQuAD contexts carry a BOM inside


def read_squad(path: str) -> list[dict[str, Any]]:
    """Paragraphs in file order: {"context", "questions": [(id, text)]}."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise XquadInputError(f"{path}: no such file") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise XquadInputError(f"{path}: not UTF-8 JSON ({exc})") from None
    articles = raw.get("data") if isinstance(raw, dict) else None
    if not isinstance(articles, list):
        raise XquadInputError(f"{path}: not SQuAD format (expected {{\"data\": [{{\"paragraphs\": ...}}]}})")
    out = []
    for a, article in enumerate(articles):
        for p, para in enumerate(article.get("paragraphs", []) if isinstance(article, dict) else []):
            if not isinstance(para, dict) or not isinstance(para.get("context"), str):
                raise XquadInputError(f"{path}: data[{a}].paragraphs[{p}] has no context text")
            qas = [(str(q.get("id", f"{a}-{p}-{n}")), q["question"]) for n, q in enumerate(para.get("qas", []))
                   if isinstance(q, dict) and isinstance(q.get("question"), str) and q["question"].strip()]
            out.append({"context": _clean(para["context"]), "questions": qas})
    if not out:
        raise XquadInputError(f"{path}: holds no paragraphs")
    return out


def pair(questions_path: str, passages_path: str) -> tuple[list[Question], list[tuple[str, str]]]:
    """Questions (each with its parallel gold paragraph) and the paragraph corpus."""
    asked, stored = read_squad(questions_path), read_squad(passages_path)
    if len(asked) != len(stored):
        raise XquadInputError(f"{questions_path} has {len(asked)} paragraphs but {passages_path} has {len(stored)}: "
                              "the files must be parallel (same articles and paragraphs in the same order)")
    corpus = [("", p["context"]) for p in stored]
    questions = [Question(qid, _clean(text), gold=[corpus[n]], hops=1, pool=[])
                 for n, para in enumerate(asked) for qid, text in para["questions"]]
    return questions, corpus


def run(questions_path: str, passages_path: str, modes: list[str], ks: list[int], embedder: str,
        limit: int | None = None, cache: Path = CACHE) -> dict[str, Any]:
    from state.context import Context

    questions, corpus = pair(questions_path, passages_path)
    questions = questions[:limit]
    data_dir, ids = build_store(corpus, embedder, cache)
    base = Context(data_dir=data_dir, embedder=embedder)
    results = {}
    for mode in modes:
        print(f"mode {mode}", file=sys.stderr)
        res = evaluate(questions, ids, mode_context(mode, base), ks)
        results[mode] = {**{f"R@{k}": res[f"R@{k}"] for k in ks}, "latency_ms": res["latency_ms"]}
    return {"questions_file": questions_path, "passages_file": passages_path, "embedder": embedder,
            "questions": len(questions), "paragraphs": len(corpus), "modes": results}


def main(argv: list[str] | None = None) -> int:
    from adapters.embedder import DEFAULT_EMBEDDER

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--questions", required=True, help="SQuAD-format file the questions come from")
    ap.add_argument("--passages", required=True, help="SQuAD-format file the paragraphs come from (parallel)")
    ap.add_argument("--mode", nargs="+", choices=MODES, default=["dense", "full"])
    ap.add_argument("--k", type=int, nargs="+", default=[1, 5])
    ap.add_argument("--embedder", default=DEFAULT_EMBEDDER)
    ap.add_argument("--limit", type=int, help="first N questions only")
    ap.add_argument("--cache", type=Path, default=CACHE, help="where ingested eval stores are kept")
    ap.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = ap.parse_args(argv)
    from state.errors import SceneMindError

    try:
        out = run(args.questions, args.passages, args.mode, args.k, args.embedder, args.limit, args.cache)
    except (XquadInputError, SceneMindError) as exc:
        print(f"xquad: error: {exc}", file=sys.stderr)
        return 2
    print(f"{out['questions']} questions from {args.questions} over {out['paragraphs']} paragraphs of "
          f"{args.passages} ({args.embedder})")
    print("| mode | " + " | ".join(f"R@{k}" for k in args.k) + " | p50 ms |")
    print("|---|" + "---|" * (len(args.k) + 1))
    for mode, res in out["modes"].items():
        print(f"| {mode} | " + " | ".join(f"{res[f'R@{k}']:.1f}" for k in args.k)
              + f" | {res['latency_ms']['p50']:.0f} |")
    if args.json:
        print(json.dumps(out, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
