"""Decoder pieces that need no model and no server: prompts, citation parsing, specs, data files, schemas."""

import json

import pytest

from adapters.decoders import answer_messages, cited_ids, load_decoder
from adapters.scene_interpreter import parse_draft, scene_json
from adapters.training import read_decoder_examples, read_interpreter_examples
from evals.field_decoder import token_f1
from state.errors import DecoderConfigError, InterpreterOutputInvalid, ModelNotFound, SceneFileError
from state.models import Formula, Recalled

SCENES = [Recalled(id="a1b2", text="Gaby: A True Story is a 1987 film directed by Luis Mandoki.", title="Gaby"),
          Recalled(id="c3d4", text="Luis Mandoki is a Mexican director born in Mexico City.", title="Luis Mandoki")]


def test_prompt_carries_question_formulas_and_scene_ids():
    formula = Formula(id="f1", chain=["a1b2", "c3d4"], summary="Gaby → Mandoki")
    system, human = answer_messages("Where was the director born?", SCENES, [formula])
    assert "Answer:" in system.content and "Evidence:" in system.content
    assert "Question: Where was the director born?" in human.content
    assert "[a1b2] Gaby: Gaby: A True Story" in human.content and "[c3d4] Luis Mandoki:" in human.content
    assert "a1b2 -> c3d4: Gaby → Mandoki" in human.content


@pytest.mark.parametrize("text,expected", [
    ("Born in Mexico City [c3d4].", ["c3d4"]),
    ("Mandoki [c3d4] directed Gaby [a1b2]; see [c3d4].", ["c3d4", "a1b2"]),
    ("Both [a1b2, c3d4].", ["a1b2", "c3d4"]),
    ("Unknown [zzzz] and [1].", []),
    ("No brackets at all.", []),
])
def test_cited_ids_keeps_only_known_ids_in_order(text, expected):
    assert cited_ids(text, [s.id for s in SCENES]) == expected


@pytest.mark.parametrize("spec", ["gpt", "hf:", "llama:/models/x", "openai:"])
def test_unknown_decoder_specs_raise_config_error(spec, tmp_path):
    class NoEmbedder:  # load_decoder only reads name/path before it rejects a spec
        name, path = "all-MiniLM-L6-v2", tmp_path

    with pytest.raises(DecoderConfigError):
        load_decoder(spec, NoEmbedder())


def test_openai_spec_needs_an_http_url(tmp_path):
    class NoEmbedder:
        name, path = "all-MiniLM-L6-v2", tmp_path

    with pytest.raises(DecoderConfigError, match="http"):
        load_decoder("openai:127.0.0.1:8000", NoEmbedder(), model="m")


@pytest.mark.parametrize("make,error", [
    (lambda p: str(p / "missing"), "does not exist"),
    (lambda p: str(p), "no config.json"),
])
def test_hf_paths_that_hold_no_model(tmp_path, make, error):
    from adapters.chat_models import resolve_model

    with pytest.raises(ModelNotFound, match=error):
        resolve_model(make(tmp_path))


def test_adapter_folder_without_adapter_config(tmp_path):
    from adapters.chat_models import resolve_model

    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    with pytest.raises(ModelNotFound, match="adapter"):
        resolve_model(str(tmp_path / "m"), str(tmp_path))


def test_unknown_quantization_is_rejected():
    from adapters.chat_models import quantization_config

    with pytest.raises(DecoderConfigError, match="4bit"):
        quantization_config("3bit")
    assert quantization_config("") is None


def test_interpreter_output_validates_and_fills_keys():
    draft = parse_draft('Sure: {"components": [{"text": "Luis Mandoki", "kind": "entity"}, '
                        '{"text": "director", "kind": "term"}], "couplings": [{"source": "e:luis mandoki", '
                        '"target": "t:director"}]} done')
    assert [c.key for c in draft.components] == ["e:luis mandoki", "t:director"]
    assert draft.couplings[0].relation == "co-occurs"
    assert parse_draft(scene_json(draft)) == draft


@pytest.mark.parametrize("text", [
    "no json here",
    '{"components": [}',
    '{"components": []}',
    '{"components": [{"text": "x", "kind": "planet"}]}',
    '{"components": [{"text": "x", "kind": "entity"}], "extra": 1}',
])
def test_invalid_interpreter_output_is_rejected(text):
    with pytest.raises(InterpreterOutputInvalid):
        parse_draft(text)


def test_decoder_jsonl_errors_name_the_line(tmp_path):
    good = {"question": "q?", "scenes": [{"id": "a", "text": "t"}], "answer": "x [a]"}
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps({"question": "q?", "answer": "x"}) + "\n")
    with pytest.raises(SceneFileError, match=r"d.jsonl:2"):
        read_decoder_examples(str(path))
    path.write_text(json.dumps(good) + "\n")
    (example,) = read_decoder_examples(str(path))
    assert example.target == "x [a]" and "[a] t" in example.messages[1].content


def test_interpreter_jsonl_checks_the_scene_schema(tmp_path):
    path = tmp_path / "i.jsonl"
    path.write_text(json.dumps({"text": "Mandoki directed Gaby.", "scene": {"components": [
        {"text": "Mandoki", "kind": "entity"}], "couplings": []}}) + "\n"
                    + json.dumps({"text": "x", "scene": {"components": [{"text": "x", "kind": "?"}]}}) + "\n")
    with pytest.raises(SceneFileError, match=r"i.jsonl:2"):
        read_interpreter_examples(str(path))


def test_token_f1():
    assert token_f1("Luis Mandoki was born", "luis mandoki was born") == 1.0
    assert token_f1("nothing shared", "Luis Mandoki") == 0.0
    assert 0 < token_f1("Luis was", "Luis Mandoki was born") < 1


def test_holdout_split_is_disjoint_and_seeded():
    from adapters.field_decoder import split_holdout

    train, held = split_holdout(100, 10, seed=3)
    assert len(held) == 10 and not set(train) & set(held) and len(train) + len(held) == 100
    assert split_holdout(100, 10, seed=3) == (train, held)


def test_nearest_prototypes_are_best_first_and_never_the_query_itself():
    import numpy as np

    from adapters.field_decoder import nearest_prototypes

    rng = np.random.default_rng(0)
    bank = rng.normal(size=(50, 8)).astype(np.float32)
    bank /= np.linalg.norm(bank, axis=1, keepdims=True)
    own = nearest_prototypes(bank, bank, 3, skip_self=True, chunk=7)  # chunks cross the diagonal
    assert all(i not in row for i, row in enumerate(own))
    sims = bank @ bank.T
    np.fill_diagonal(sims, -np.inf)
    assert (own[:, 0] == sims.argmax(axis=1)).all()
    assert (np.take_along_axis(sims, own, axis=1)[:, :-1] >= np.take_along_axis(sims, own, axis=1)[:, 1:]).all()
    assert (nearest_prototypes(bank[:5], bank, 1)[:, 0] == np.arange(5)).all()  # without skip_self: itself


def test_spoken_text_passes_over_verbatim_prototype_copies(embedder):
    from adapters.field_decoder import pick_spoken

    proto = "Luis Mandoki is a Mexican film director."
    vec = embedder.embed([proto])
    edited = "Luis Mandoki is a Mexican director."
    far = "A river flows into the sea."
    # The copy is nearer the vector (it is the vector's own text) but is only memory handed back:
    # any edited candidate, even a far one, is spoken instead (README: "passed over whenever an edited
    # candidate exists").
    assert pick_spoken(vec, [[" luis mandoki is a  Mexican film director.", edited]], embedder, [[proto]]) == [edited]
    assert pick_spoken(vec, [[proto, far]], embedder, [[proto]]) == [far]
    # Without prototypes the nearest option is spoken.
    assert pick_spoken(vec, [[far, proto, edited]], embedder) == [proto]
    # When every option is a copy, the nearest copy is spoken rather than nothing (the README says so).
    other = "Gaby: A True Story is a 1987 film."
    assert pick_spoken(vec, [[other, proto]], embedder, [[other, proto]]) == [proto]


def test_a_draft_is_a_near_miss_of_its_text_never_the_text():
    import numpy as np

    from adapters.field_decoder import draft_of

    rng = np.random.default_rng(1)
    text = "Dan Milne is a British actor and director known for EastEnders."
    pool = ["Ian", "Barry", "Australian"]
    drafts = [draft_of(text, pool, rng) for _ in range(50)]
    assert all(d != text and d for d in drafts)
    assert all(set(d.split()) <= set(text.split()) | set(pool) for d in drafts)
    assert any(set(d.split()) & set(pool) for d in drafts)  # some words were swapped for the pool's
    assert draft_of("One", [], rng) == "."  # a one-word text has no near miss but a stop
