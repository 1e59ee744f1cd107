"""Russian and English scenes in one store: a Russian question wakes the English scene that answers it."""

from __future__ import annotations

import pytest

from adapters.embedder import E5_SMALL, load_embedder
from adapters.memory import Memory
from adapters.sources import SceneRecord

pytestmark = pytest.mark.integration

SCENES = [
    SceneRecord(title="Victoria and Albert Museum", text="Henry Cole, the museum's first director, planned the "
                "Museum of Manufactures, which opened in May 1852 at Marlborough House in London."),
    SceneRecord(title="Steam engine", text="A steam engine indicator records the pressure in the cylinder; it "
                "was first used in 1851 to analyse the performance of engines."),
    SceneRecord(title="Gaby: A True Story", text="Gaby: A True Story is a 1987 drama film directed by Luis Mandoki "
                "about a woman with cerebral palsy."),
    SceneRecord(title="Luis Mandoki", text="Luis Mandoki is a Mexican film director, born in Mexico City in 1954."),
    SceneRecord(title="Кислород", text="В 1891 году шотландскому химику Джеймсу Дьюару удалось выделить жидкий "
                "кислород в количестве, достаточном для исследования."),
    SceneRecord(title="Варшава", text="Варшава — столица Польши. В Варшаве расположен Саксонский сад, где с 1870 "
                "по 1939 год работал Летний театр."),
    SceneRecord(title="Никола Тесла", text="Никола Тесла умер в Нью-Йорке в январе 1943 года; единица магнитной "
                "индукции названа в его честь."),
    SceneRecord(title="Музеи Москвы", text="В Москве много музеев: Третьяковская галерея, Пушкинский музей и "
                "Исторический музей, которым руководил директор Алексей Уваров."),
]


@pytest.fixture(scope="module")
def mixed_store(tmp_path_factory) -> str:
    data_dir = str(tmp_path_factory.mktemp("mixed_store"))
    report = Memory(data_dir, load_embedder(E5_SMALL), create=True).ingest(SCENES)
    assert report.added == len(SCENES)
    return data_dir


def ranked_titles(data_dir: str, question: str, **settings) -> list[str]:
    from graph.builder import build_graph
    from state.context import Context

    out = build_graph(retrieval_only=True).invoke(
        {"question": question}, context=Context(data_dir=data_dir, embedder=E5_SMALL, **settings))
    return [r.title for r in sorted(out["active"].values(), key=lambda r: -r.score)]


def test_a_russian_question_wakes_the_english_scene_that_answers_it(mixed_store):
    # The Russian «Музеи Москвы» scene shares words (музей, директор) with the question; the English one answers.
    assert ranked_titles(mixed_store, "Кто был первым директором музея Виктории и Альберта?")[0] == \
        "Victoria and Albert Museum"


def test_an_english_question_wakes_the_russian_scene_that_answers_it(mixed_store):
    assert ranked_titles(mixed_store, "Who obtained liquid oxygen in 1891?")[0] == "Кислород"


def test_inflected_russian_forms_meet_in_one_scene(mixed_store):
    assert ranked_titles(mixed_store, "Какой сад есть в Варшаве?")[0] == "Варшава"


def test_a_russian_two_hop_question_follows_a_bridge_through_english_scenes(mixed_store):
    top = ranked_titles(mixed_store, "В каком городе родился режиссёр фильма «Габи: правдивая история»?")[:2]
    assert set(top) == {"Gaby: A True Story", "Luis Mandoki"}


def test_an_index_from_before_russian_lemmas_is_refused_in_one_line_and_repair_rebuilds_it(mixed_store, tmp_path,
                                                                                           capsys):
    import shutil
    import sqlite3

    from graph.cli import main

    # An index written before lemmas: Russian keys in surface forms, the old schema number.
    data_dir = str(tmp_path / "old_store")
    shutil.copytree(mixed_store, data_dir)
    db = sqlite3.connect(f"{data_dir}/couplings.sqlite")
    db.execute("UPDATE key_name SET name = 't:варшаве' WHERE name = 't:варшава'")
    db.execute("PRAGMA user_version = 2")
    db.commit()
    db.close()

    question = ["--data-dir", data_dir, "--embedder", E5_SMALL, "ask", "Какой сад есть в Варшаве?"]
    assert main(question) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "couplings schema 2" in err and f"--data-dir {data_dir} repair" in err

    assert main(["--data-dir", data_dir, "--embedder", E5_SMALL, "repair"]) == 0
    db = sqlite3.connect(f"{data_dir}/couplings.sqlite")
    keys = {k for (k,) in db.execute("SELECT k.name FROM scene_key JOIN key_name k ON k.id = scene_key.key")}
    db.close()
    assert "t:варшава" in keys and "t:варшаве" not in keys
    assert ranked_titles(data_dir, "Какой сад есть в Варшаве?")[0] == "Варшава"


def test_the_question_and_its_probes_embed_as_queries_and_scenes_as_passages(mixed_store):
    import numpy as np

    from adapters.memory import passage_text
    from graph.builder import build_graph
    from nodes.resources import _QUERIES
    from state.context import Context

    e5 = load_embedder(E5_SMALL)
    out = build_graph(retrieval_only=True).invoke(
        {"question": "В каком городе родился режиссёр фильма «Габи: правдивая история»?"},
        context=Context(data_dir=mixed_store, embedder=E5_SMALL))
    asked = [out["scene"].text] + [p.text for p in out["probes"]]
    assert len(asked) > 1  # the bridge probe ran
    for text in asked:
        used = _QUERIES[(E5_SMALL, text)]
        assert np.allclose(used, e5.embed_queries([text])[0], atol=1e-4)
        assert not np.allclose(used, e5.embed([text])[0], atol=1e-2)  # not the passage reading
    stored = Memory(mixed_store, e5).scenes([r.scene_id for r in SCENES])
    for r in SCENES:
        assert np.allclose(stored[r.scene_id].vector, e5.embed([passage_text(r.title, r.text)])[0], atol=1e-4)
