"""The multi-hop harness end to end on a 10-question MuSiQue slice (its own 200 paragraphs as corpus)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from evals.multihop import load_corpus, load_questions, passage_key

pytestmark = pytest.mark.integration
DATA = Path(__file__).resolve().parents[1] / "data" / "musique_10.json"


def test_formats_are_detected_and_gold_is_in_the_pooled_corpus(tmp_path):
    questions = load_questions(str(DATA))
    assert len(questions) == 10 and all(q.gold for q in questions)
    corpus = {passage_key(t, x) for t, x in load_corpus(None, questions)}
    assert all(passage_key(t, x) in corpus for q in questions for t, x in q.gold)
    # the HotpotQA / 2Wiki shape, and a title -> sentences corpus
    hotpot = tmp_path / "h.json"
    hotpot.write_text(json.dumps([{"_id": "x", "question": "q?", "supporting_facts": [["A", 0], ["B", 1]],
                                   "context": [["A", ["a1.", " a2."]], ["B", ["b1.", "b2."]], ["C", ["c."]]]}]))
    (q,) = load_questions(str(hotpot))
    assert q.hops == 2 and [t for t, _ in q.gold] == ["A", "B"] and len(q.pool) == 3
    corpus_file = tmp_path / "c.json"
    corpus_file.write_text(json.dumps({"A": ["a1.", "a2."], "B": ["b1.", "b2."]}))
    keys = {passage_key(t, x) for t, x in load_corpus(str(corpus_file), [q])}
    assert passage_key(*q.gold[0]) in keys  # sentence joins differ only in whitespace


def test_harness_reports_every_mode_and_full_is_not_worse_than_dense(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "evals.multihop", "--questions", str(DATA), "--k", "2", "5", "10",
         "--cache", str(tmp_path), "--json"],
        capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert set(report["modes"]) == {"dense", "resonance", "full"}
    for res in report["modes"].values():
        assert res["questions"] == 10
        assert 0 <= res["R@2"] <= res["R@5"] <= res["R@10"] <= 100
        assert set(res["by_hops"]) == {"2", "3", "4"}
        assert res["latency_ms"]["p50"] > 0
    assert report["modes"]["full"]["R@5"] >= report["modes"]["dense"]["R@5"]
    assert report["modes"]["full"]["retrievals_mean"] > report["modes"]["dense"]["retrievals_mean"] == 1
