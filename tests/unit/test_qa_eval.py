"""evals.qa's gold for questions asked over memory in another language (no store, no model)."""

import json

from evals.qa import load_items, over_memory


def _squad(path, title, context, question, answer, qid):
    path.write_text(json.dumps({"data": [{"title": title, "paragraphs": [
        {"context": context, "qas": [{"id": qid, "question": question, "answers": [{"text": answer}]}]}]}]}),
        encoding="utf-8")
    return str(path)


def test_questions_over_a_parallel_file_take_its_answers_and_passages(tmp_path):
    ru = _squad(tmp_path / "ru.json", "Пантеры", "Защита «Пантер» пропустила 308 очков.", "Сколько очков?",
                "308 очков", "q1")
    en = _squad(tmp_path / "en.json", "Panthers", "The Panthers defense gave up 308 points.", "How many points?",
                "308", "q1")
    questions, _ = load_items(ru)
    held, corpus = load_items(en)
    extra = dict(questions[0], id="q2")  # a question the memory file lacks is dropped
    (item,) = over_memory(questions + [extra], held)
    assert item["question"] == "Сколько очков?" and item["answers"] == ["308"]
    assert item["gold_passages"] == [("Panthers", "The Panthers defense gave up 308 points.")] == corpus
