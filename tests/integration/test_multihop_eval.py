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


# Which gold passages each mode ranks in its top 5 on this slice (all-MiniLM-L6-v2), by question id.
# A deliberate change to retrieval updates these from `python -m evals.multihop ... --json` (per_question).
BOTH_DENSE = {
    "2hop__150763_14904": ["Adolescence", "Journal of Psychotherapy Integration"],
    "2hop__205146_62031": ["Bubye River"],
    "2hop__215852_404718": ["Johnnycake, West Virginia"],
    "2hop__468258_495107": ["Brand (play)"],
    "2hop__479193_63835": ["Trade unions in Europe", "Treaties of the European Union"],
    "2hop__6584_6587": ["Canon law", "Canon law"],
    "3hop1__358656_182905_638959": ["Alexander and the Terrible, Horrible, No Good, Very Bad Day", "Judith Viorst"],
    "3hop1__404363_705261_126049": ["Aschenbrödel", "Vienna Walzer Orchestra"],
    "3hop1__520721_132413_16030": [],
    "4hop1__709382_146811_31223_91015": ["Hello Love (song)", "Publix"],
}
TOP5 = {
    "dense": BOTH_DENSE,
    # Spreading over shared entities adds the second hops the question never names ...
    "resonance": {**BOTH_DENSE, "2hop__468258_495107": ["Brand (play)", "Nora Ibsen"],
                  "3hop1__358656_182905_638959": ["Alexander and the Terrible, Horrible, No Good, Very Bad Day"],
                  "3hop1__404363_705261_126049": ["Aschenbrödel"],
                  "3hop1__520721_132413_16030": ["Brother (Pearl Jam song)", "Seattle"]},
    # ... and bridge probes walk the 4-hop chain (Tennessee, Hank Snow).
    "full": {**BOTH_DENSE, "2hop__468258_495107": ["Brand (play)", "Nora Ibsen"],
             "3hop1__404363_705261_126049": ["Aschenbrödel"],
             "3hop1__520721_132413_16030": ["Brother (Pearl Jam song)"],
             "4hop1__709382_146811_31223_91015": ["Hank Snow", "Hello Love (song)", "Publix", "Tennessee"]},
}


@pytest.mark.slow
def test_harness_reports_every_mode_and_which_gold_passages_each_hits(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "evals.multihop", "--questions", str(DATA), "--k", "2", "5", "10",
         "--cache", str(tmp_path), "--embedder", "all-MiniLM-L6-v2", "--json"],
        capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert set(report["modes"]) == {"dense", "resonance", "full"}
    for mode, res in report["modes"].items():
        assert res["questions"] == 10 and len(res["per_question"]) == 10
        top5 = {q["id"]: sorted(t for t, rank in q["gold_ranks"] if rank is not None and rank <= 5)
                for q in res["per_question"]}
        assert top5 == TOP5[mode], mode
        # The summary figures are those hits: R@5 is the mean share of each question's gold in its top 5.
        share = [len(top5[q["id"]]) / len(q["gold_ranks"]) for q in res["per_question"]]
        assert res["R@5"] == round(100 * sum(share) / len(share), 1)
        assert 0 <= res["R@2"] <= res["R@5"] <= res["R@10"] <= 100
        assert set(res["by_hops"]) == {"2", "3", "4"}
    assert report["modes"]["full"]["R@5"] > report["modes"]["resonance"]["R@5"] > report["modes"]["dense"]["R@5"]
    assert report["modes"]["full"]["retrievals_mean"] > report["modes"]["dense"]["retrievals_mean"] == 1
