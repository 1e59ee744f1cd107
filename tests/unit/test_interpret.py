import pytest

from adapters.lexicon import compose_scene, entity_key, parse, scene_keys, title_aliases
from nodes.interpret import check_question
from state.errors import EmptyInput, InputTooLarge


def test_english_parse_finds_multiword_entities_years_and_terms():
    p = parse("The Journal of Mathematical Physics was first published in 1960 by the American Institute of Physics.")
    assert p.language == "en"
    assert "Journal of Mathematical Physics" in p.entities
    assert "American Institute of Physics" in p.entities
    assert "1960" in p.entities
    assert "published" in p.terms and "the" not in p.terms


def test_sentence_initial_stopword_is_not_an_entity():
    p = parse("The film was directed by Clarence Brown. He was born in Clinton.")
    assert "The" not in p.entities and "He" not in p.entities
    assert {"Clarence Brown", "Clinton"} <= set(p.entities)
    assert len(p.clauses) == 2


def test_russian_parse_finds_cyrillic_entities_and_quoted_titles():
    p = parse("Кто написал роман «Война и мир»? Лев Толстой жил в Ясной Поляне. Он родился в 1828 году.")
    assert p.language == "ru"
    assert len(p.clauses) == 3
    assert "Война и мир" in p.entities and "Лев Толстой" in p.entities and "1828" in p.entities
    assert "Он" not in p.entities and "Война" not in p.entities  # the quoted title is one entity
    assert "роман" in p.terms


def test_title_aliases_and_scene_keys():
    assert title_aliases("Brother (Pearl Jam song)") == ["brother pearl jam song", "brother"]
    assert title_aliases("Johnnycake, West Virginia") == ["johnnycake west virginia", "johnnycake"]
    keys = scene_keys("The film stars Liv Ullmann. The film was shot in 1987.", title="Gaby: A True Story")
    assert {"e:gaby a true story", "e:liv ullmann", "e:1987"} <= set(keys)
    assert keys["t:film"] == 2 and keys["t:gaby"] == 1  # counts feed BM25; the title counts too
    assert "t:the" not in keys and "e:film" not in keys


def test_compose_scene_couples_entities_of_a_clause_and_the_title():
    p = parse("Gaby is a film directed by Luis Mandoki. It stars Liv Ullmann.", title="Gaby: A True Story")
    scene = compose_scene("s1", p, title="Gaby: A True Story")
    kinds = {c.kind for c in scene.components}
    assert {"title", "entity", "term"} <= kinds
    pairs = {(c.source, c.target) for c in scene.couplings}
    assert (entity_key("Gaby: A True Story"), entity_key("Luis Mandoki")) in pairs
    assert (entity_key("Gaby: A True Story"), entity_key("Liv Ullmann")) in pairs
    assert (entity_key("Luis Mandoki"), entity_key("Liv Ullmann")) not in pairs  # different clauses


@pytest.mark.parametrize("bad", ["", "   \n\t ", None, 42])
def test_empty_or_wrong_type_question_is_refused(bad):
    with pytest.raises(EmptyInput):
        check_question(bad, 100)


def test_huge_question_is_refused_with_the_limit_named():
    with pytest.raises(InputTooLarge, match="1,000,000 characters"):
        check_question("x" * 1_000_000, 20_000)
