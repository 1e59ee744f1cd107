"""Ingest files and questions that used to lose data or print tracebacks (issue 10, items 5, 7, 8, 12).

No model and no store: reading and checking happens before anything is written.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from adapters.sources import CHUNK_CHARS, MAX_SCENE_CHARS, read_sources
from state.errors import SceneFileError

pytestmark = pytest.mark.reliability

SCENEMIND = str(Path(sys.executable).with_name("scenemind"))


def test_one_id_for_two_texts_is_refused_naming_both_lines(tmp_path):
    path = tmp_path / "scenes.jsonl"
    path.write_text(json.dumps({"id": "a", "text": "The harbour at dawn."}) + "\n"
                    + json.dumps({"id": "b", "text": "A market."}) + "\n"
                    + json.dumps({"id": "a", "text": "A different text under the same id."}) + "\n")
    with pytest.raises(SceneFileError) as info:
        read_sources([str(path)])
    assert info.value.line == 3 and f"{path}:1" in str(info.value) and "'a'" in str(info.value)
    # The same record twice is not a conflict: ids are stable, nothing is doubled.
    again = tmp_path / "again.jsonl"
    again.write_text(path.read_text().splitlines()[0] + "\n" + path.read_text().splitlines()[0] + "\n")
    assert len(read_sources([str(again)])) == 2


@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
def test_deeply_nested_json_is_refused_with_file_and_line(tmp_path, suffix):
    deep = "[" * 100_000 + "]" * 100_000
    path = tmp_path / f"deep{suffix}"
    if suffix == ".jsonl":
        path.write_text(json.dumps({"text": "fine"}) + "\n" + '{"text": "x", "meta": ' + deep + "}\n")
    else:
        path.write_text(deep)
    with pytest.raises(SceneFileError, match="nested too deeply") as info:
        read_sources([str(path)])
    assert info.value.line == (2 if suffix == ".jsonl" else None)


def test_a_huge_paragraph_becomes_bounded_scenes(tmp_path):
    sentence = "The keeper of the lighthouse wrote another letter to the painter in the city. "
    text = sentence * 4_000  # one 316,000-char paragraph: no blank line anywhere
    path = tmp_path / "one_paragraph.txt"
    path.write_text(text)
    records = read_sources([str(path)])
    assert len(records) > len(text) // CHUNK_CHARS
    assert max(len(r.text) for r in records) <= CHUNK_CHARS <= MAX_SCENE_CHARS
    assert " ".join(r.text for r in records).split() == text.split()  # nothing lost, nothing added
    no_spaces = tmp_path / "no_spaces.md"
    no_spaces.write_text("# Title\n\n" + "x" * 2_500)
    assert [len(r.text) for r in read_sources([str(no_spaces)])] == [1_000, 1_000, 500]


def test_ask_json_output_is_bounded():
    from graph.cli import JSON_TEXT_CHARS, clipped

    big = {"answer": "y" * 50_000, "probes": [{"text": "z" * 10}], "n": 3}
    out = clipped(big)
    assert len(out["answer"]) < JSON_TEXT_CHARS + 40 and "50,000 chars" in out["answer"]
    assert out["probes"] == [{"text": "z" * 10}] and out["n"] == 3


def test_a_question_that_is_not_utf8_is_one_line(tmp_path):
    proc = subprocess.run([SCENEMIND.encode(), b"--data-dir", str(tmp_path / "none").encode(), b"ask",
                           b"Teutberga \xff"], capture_output=True, timeout=120)
    err = proc.stderr.decode("utf-8", "replace").strip()
    assert proc.returncode == 2, err
    assert "not valid UTF-8" in err and "0xff" in err and "Traceback" not in err and len(err.splitlines()) == 1
