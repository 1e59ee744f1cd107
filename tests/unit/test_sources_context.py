import json

import pytest

from adapters.sources import content_id, read_sources
from state.context import Context
from state.errors import SceneFileError


def test_jsonl_records_get_stable_content_ids(tmp_path):
    f = tmp_path / "s.jsonl"
    f.write_text('{"text": "A scene.", "title": "T"}\n\n{"text": "Another.", "id": "mine", "meta": {"k": 1}}\n'
                 '{"text": "A scene.", "title": "U"}\n{"text": "A scene!", "title": "T"}\n{"text": "A scene."}\n')
    recs = read_sources([str(f)])
    # Pinned: "s-" + the first 20 hex digits of sha256("T\nA scene."), so a store ingested by an earlier
    # version keeps its ids; a changed title or a changed text is another scene.
    assert [r.scene_id for r in recs] == ["s-e239433f06f61b34f0d3", "mine", "s-8298f4c1e586121fd456",
                                          "s-c1cdf5db62ed449c3885", "s-700fec7d5a7b58014f1c"]
    assert content_id("T", "A scene.") == "s-e239433f06f61b34f0d3"
    assert recs[1].meta == {"k": 1}
    assert [r.scene_id for r in read_sources([str(f)])] == [r.scene_id for r in recs]


def test_broken_json_line_names_file_and_line(tmp_path):
    f = tmp_path / "bad.jsonl"
    f.write_text('{"text": "ok"}\n{"text": "broken"\n{"text": "ok too"}\n')
    with pytest.raises(SceneFileError) as err:
        read_sources([str(f)])
    assert err.value.line == 2 and str(f) in str(err.value) and "Nothing was ingested" in str(err.value)


def test_broken_utf8_names_file_and_line(tmp_path):
    f = tmp_path / "bad.jsonl"
    f.write_bytes(b'{"text": "ok"}\n{"text": "caf\xe9"}\n')
    with pytest.raises(SceneFileError, match=r"bad.jsonl:2: invalid UTF-8"):
        read_sources([str(f)])
    t = tmp_path / "bad.txt"
    t.write_bytes(b"fine line\nsecond\n\xff\xfe third\n")
    with pytest.raises(SceneFileError, match=r"bad.txt:3: invalid UTF-8"):
        read_sources([str(t)])


def test_record_without_text_and_missing_file(tmp_path):
    f = tmp_path / "x.jsonl"
    f.write_text('{"title": "no text"}\n')
    with pytest.raises(SceneFileError, match="no non-empty"):
        read_sources([str(f)])
    with pytest.raises(SceneFileError, match="no such file"):
        read_sources([str(tmp_path / "missing.jsonl")])


def test_corpus_json_list_and_title_to_sentences_dict(tmp_path):
    a = tmp_path / "a.json"
    a.write_text(json.dumps([{"title": "X", "text": "x text"}, {"title": "X", "text": "other"}]))
    b = tmp_path / "b.json"
    b.write_text(json.dumps({"Y": ["First.", "Second."]}))
    recs = read_sources([str(a), str(b)])
    assert [(r.title, r.text) for r in recs] == [("X", "x text"), ("X", "other"), ("Y", "First. Second.")]
    assert len({r.scene_id for r in recs}) == 3  # same title, different text: different scenes


def test_markdown_is_chunked_under_its_headings(tmp_path):
    f = tmp_path / "notes.md"
    f.write_text("# Rome\n\nRome was founded.\n\nIt grew.\n\n## Carthage\n\nCarthage fell.\n")
    recs = read_sources([str(f)])
    assert [(r.title, r.text) for r in recs] == [("Rome", "Rome was founded.\nIt grew."), ("Carthage", "Carthage fell.")]


def test_context_env_overrides_defaults_but_not_explicit_values(monkeypatch):
    monkeypatch.setenv("SCENEMIND_TOP_K", "9")
    monkeypatch.setenv("SCENEMIND_DECODER", "openai:http://127.0.0.1:1/v1")
    assert Context().top_k == 9 and Context().decoder.startswith("openai:")
    assert Context(top_k=3).top_k == 3
