"""Russian in the rule-based interpreter: lemmatised keys couple inflected forms; names stay whole."""

from __future__ import annotations

from adapters.lexicon import capitalised_spans, entity_key, lemma, norm, parse, scene_keys, terms_of


def test_inflected_forms_of_a_name_give_one_entity_key():
    keys = {entity_key(form) for form in ("Москва", "Москве", "Москвы", "Москвой")}
    assert keys == {"e:москва"}


def test_inflected_forms_couple_two_scenes_through_one_key():
    a = scene_keys("Население Москвы превышает двенадцать миллионов человек.")
    b = scene_keys("Кремль находится в Москве, на берегу реки.")
    shared = {k for k in a if k.startswith("e:")} & {k for k in b if k.startswith("e:")}
    assert shared == {"e:москва"}
    assert "t:москва" in a and "t:москва" in b  # the BM25 terms are lemmas too


def test_bm25_terms_are_lemmas_without_stop_or_question_words():
    assert terms_of("В каком году были основаны университеты?") == ["год", "основать", "университет"]


def test_a_surname_keeps_its_proper_reading():
    assert lemma("Толстого", proper=True) == "толстой"
    assert norm("Льва Николаевича Толстого") == norm("Лев Николаевич Толстой") == "лев николаевич толстой"


def test_multi_word_names_stay_whole():
    assert capitalised_spans("Он учился в Московском государственном университете.") == [
        "Московском государственном университете"]
    assert norm("Московского государственного университета") == "московский государственный университет"
    assert capitalised_spans("Лев Николаевич Толстой родился в Ясной Поляне.") == [
        "Лев Николаевич Толстой", "Ясной Поляне"]
    assert norm("Ясной Поляне") == norm("Ясная Поляна")


def test_capitalised_only_by_the_sentence_start_is_not_a_name():
    assert capitalised_spans("Население Москвы растёт.") == ["Москвы"]
    assert capitalised_spans("Защита уступила всего 308 очков.") == []


def test_russian_question_forms_in_the_parse():
    cases = {
        "Кто написал роман «Война и мир»?": (["Война и мир"], ["написать", "роман", "война", "мир"]),
        "В каком году родился Лев Толстой?": (["Лев Толстой"], ["год", "родиться", "лев", "толстой"]),
        "Какая река протекает через Киев?": (["Киев"], ["река", "протекать", "киев"]),
        "Сколько очков уступила защита Пэнтерс?": (["Пэнтерс"], ["очко", "уступить", "защита", "пэнтерс"]),
        "Где находится Московский государственный университет?": (
            ["Московский государственный университет"], ["находиться", "московский", "государственный",
                                                          "университет"]),
    }
    for question, (entities, terms) in cases.items():
        p = parse(question)
        assert p.language == "ru"
        assert p.entities == entities, question
        assert p.terms == terms, question


def test_english_keys_are_untouched():
    text = "The Kremlin's walls were built in 1495 by Italian masters in Moscow."
    assert norm("The Kremlin's walls") == "kremlin walls"
    assert terms_of(text) == ["kremlin", "walls", "built", "1495", "italian", "masters", "moscow"]
    assert capitalised_spans(text) == ["Kremlin's", "Italian", "Moscow"]


def test_names_the_dictionary_lacks_are_cut_to_one_stem():
    assert {norm(f) for f in ("Бронкос", "Бронкосу", "Бронкоса")} == {"бронкос"}
    assert norm("Джеймсу Дьюару") == norm("Джеймс Дьюар")


def test_the_keys_of_the_demo_corpora_are_pinned_to_keys_version():
    # Cached eval stores are keyed by KEYS_VERSION: a change that alters any key must bump it (and this digest).
    import hashlib
    import json

    from adapters.lexicon import KEYS_VERSION
    from adapters.sources import read_sources
    from scenemind_data import DEMO_SCENES, DEMO_SCENES_XQUAD

    digest = hashlib.sha256()
    for r in read_sources([str(DEMO_SCENES), str(DEMO_SCENES_XQUAD)]):
        digest.update(json.dumps(scene_keys(r.text, r.title), sort_keys=True, ensure_ascii=False).encode())
    assert (KEYS_VERSION, digest.hexdigest()[:16]) == (2, "7a9fb6cd80e1c16f")
