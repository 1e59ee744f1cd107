"""The rule-based interpreter: clauses, entities and salient terms of a text.

English and Russian (Latin and Cyrillic scripts). No model: capitalised spans,
quoted titles and years are entities; content words are terms. Keys are
normalised forms used to couple scenes that mention the same thing.

Russian words are lemmatised (pymorphy3 with the OpenCorpora dictionaries bundled in
`pymorphy3-dicts-ru`), so «Москва», «Москве», «Москвы» are one key; a capitalised
word prefers its proper-noun reading («Толстого» -> толстой, not толстый). A
name stays whole: each word of a span is lemmatised and the span is kept, and a
capitalised adjective heads the lowercase noun phrase that agrees with it
(«Московского государственного университета» -> московский государственный
университет). Words without Cyrillic letters are untouched, so English keys are
exactly what they were.

KEYS_VERSION names what `scene_keys` gives: bump it whenever a change alters the keys
of any text (tests/unit/test_lexicon_russian.py pins the keys of the demo corpora to it),
so cached eval stores built with older keys are never reused.
"""

from __future__ import annotations

import re
import threading
import unicodedata
from functools import lru_cache

from state.models import Component, Coupling, Parse, Scene

_STOP_EN = set(
    """a an the and or but if then else of in on at to for from by with without about into onto over under
    as is are was were be been being am do does did done have has had having it its this that these those
    there here which who whom whose what when where why how not no nor so than too very can could would
    should may might must shall will just also only such both each few more most other some any all own same
    he she they them his her their our we you your i me my mine us him hers theirs ours yours one two
    after before during while between against through up down out off again further once because until
    whether though although yet since per via within among upon""".split()
)
_STOP_RU = set(
    """и в во не что он на я с со как а то все она так его но да ты к у же вы за бы по только ее мне было вот от
    меня еще нет о из ему теперь когда даже ну вдруг ли если уже или ни быть был него до вас нибудь опять уж
    вам ведь там потом себя ничего ей может они тут где есть надо ней для мы тебя их чем была сам чтоб без
    будто чего раз тоже себе под будет ж тогда кто этот того потому этого какой совсем ним здесь этом один
    почти мой тем чтобы нее сейчас были куда зачем всех никогда можно при наконец два об другой хоть после
    над больше тот через эти нас про всего них какая много разве три эту моя впрочем хорошо свою этой перед
    иногда лучше чуть том нельзя такой им более всегда конечно всю между это эта""".split()
)
# Russian words that start sentences or ask without naming anything (lemmas; inflected forms match through
# `lemma`): question words, discourse words, pronoun-like adjectives.
_STOP_RU |= set(
    """какой каков который сколько почему откуда куда кто что где когда чей зачем как ли также однако кроме
    согласно например поэтому затем вскоре позже ранее сначала многий несколько около более менее весь свой
    такой этот тот самый каждый другой любой иной являться""".split()
)
# Lowercase words allowed inside a capitalised span ("University of Copenhagen", "Ludwig van Beethoven").
_CONNECTORS = {"of", "the", "and", "de", "la", "le", "von", "van", "der", "den", "du", "for", "&", "y", "di", "da",
               "del", "della", "on", "in", "и"}
# Words that are capitalised only because they start a sentence or are generic.
_GENERIC = set("""also one two first second new later known called named based according however many much several
besides s t don should now against above below further doing myself ourselves yourself yourselves himself
herself itself themselves""".split())

KEYS_VERSION = 2  # 1: surface forms; 2: Russian lemmas (pymorphy3)
_WORD = re.compile(r"\w+(?:[-'’.]\w+)*", re.UNICODE)
_QUOTED = re.compile(r"[\"“«„]([^\"”»“]{2,80})[\"”»“]")
_YEAR = re.compile(r"\b(1[0-9]{3}|20[0-9]{2})\b")
_BREAK = re.compile(r"[,;:()\"!?«»“”]|\.\s")
_CLAUSE_SPLIT = re.compile(r"(?<=[.!?;])\s+(?=[\"“«(]?[A-ZА-ЯЁ0-9])|\n+")


_CYRILLIC = re.compile(r"[\u0400-\u04ff]")
# Readings that mark a proper name in OpenCorpora tags: first name, surname, patronymic, place, organisation, brand.
_PROPER = {"Name", "Surn", "Patr", "Geox", "Orgn", "Trad"}
_morph_lock = threading.Lock()
_morph_analyzer = None


def _morph():
    """The pymorphy3 analyser (dictionaries load once per process, ~0.2 s)."""
    global _morph_analyzer
    with _morph_lock:
        if _morph_analyzer is None:
            import pymorphy3

            _morph_analyzer = pymorphy3.MorphAnalyzer(lang="ru")
        return _morph_analyzer


def has_cyrillic(text: str) -> bool:
    return bool(_CYRILLIC.search(text))


@lru_cache(maxsize=200_000)
def _parses(low: str) -> tuple:
    return tuple(_morph().parse(low))


@lru_cache(maxsize=200_000)
def lemma(word: str, proper: bool = False) -> str:
    """The lower-cased dictionary form of a Russian word; any other word just lower-cased.

    `proper` (the word was capitalised where it stood) prefers a proper-noun reading when
    the dictionary has one, so a surname does not become an adjective.
    """
    low = word.lower()
    if not _CYRILLIC.search(low):
        return low
    parses = _parses(low)
    if not parses:
        return low
    best = parses[0]
    if not _morph().word_is_known(low):
        # A word the dictionary lacks (mostly a foreign name): guessed paradigms disagree from form to form
        # («Теслы» -> тесел, «Пристли» -> пристля), so every form is cut to one stem instead.
        return _stem(low.replace("ё", "е"))
    if proper:  # a name: its proper reading, else a singular one («Ясной Поляне» -> поляна, not полянин)
        best = next((p for p in parses if _PROPER & p.tag.grammemes),
                    next((p for p in parses if p.tag.number == "sing"), best))
    return best.normal_form.replace("ё", "е")


# Case endings of nouns and adjectives, longest first; what is left of an unknown name is its stem.
_ENDINGS = sorted("""а я ы и е у ю о ой ей ом ем ью ами ями ах ях ов ев ам ям ого его ому ему ым им ую юю ая яя ое ее
    ые ие ых их ыми ими ый ий""".split(), key=len, reverse=True)


def _stem(word: str) -> str:
    for ending in _ENDINGS:
        if word.endswith(ending) and len(word) - len(ending) >= 3:
            return word[: -len(ending)]
    return word


def _is_known_common(word: str) -> bool:
    """A Russian dictionary word with no proper-noun reading (a capitalised one only starts a sentence)."""
    low = word.lower()
    return (_morph().word_is_known(low) and not any(_PROPER & p.tag.grammemes for p in _parses(low)))


def _cases(word: str, pos: str) -> set[str]:
    return {p.tag.case for p in _parses(word.lower()) if p.tag.POS == pos and p.tag.case}


def normalise(text: str) -> str:
    """Unicode NFC, unified quotes, collapsed whitespace, no byte-order marks."""
    text = unicodedata.normalize("NFC", text)
    text = text.replace("\ufeff", "").replace("\u00a0", " ").replace("``", '"').replace("''", '"')
    text = re.sub(r"[ \t\r\f\v]+", " ", text)
    return re.sub(r"\n\s*\n+", "\n", text).strip()


def language_of(text: str) -> str:
    cyr = sum(1 for ch in text if "\u0400" <= ch <= "\u04ff")
    lat = sum(1 for ch in text if "a" <= ch.lower() <= "z")
    if cyr == 0 and lat == 0:
        return "other"
    return "ru" if cyr > lat else "en"


def split_clauses(text: str) -> list[str]:
    parts = [p.strip() for p in _CLAUSE_SPLIT.split(text)]
    return [p for p in parts if p]


def norm(text: str) -> str:
    """Canonical entity form: lower case, no possessive or punctuation, no leading article."""
    if _CYRILLIC.search(text):
        # Russian words become lemmas, each word of a name on its own (its case read before lowering).
        text = re.sub(r"[^\w\s]", " ", text.replace("’", "'"))
        text = " ".join(lemma(w, proper=w[:1].isupper()) for w in text.split())
    text = text.lower().replace("’", "'")
    text = re.sub(r"'s\b", "", text)
    text = re.sub(r"[^\w\s]", " ", text)
    text = re.sub(r"\s+", " ", text).strip()
    return text[4:] if text.startswith("the ") else text


def entity_key(text: str) -> str:
    return "e:" + norm(text)


def term_key(word: str) -> str:
    return "t:" + word


def words(text: str) -> list[str]:
    return _WORD.findall(text)


def is_stop(word: str) -> bool:
    low = word.lower()
    if low in _STOP_EN or low in _STOP_RU or low in _GENERIC:
        return True
    return " " not in low and bool(_CYRILLIC.search(low)) and lemma(low) in _STOP_RU


def _capitalised(word: str) -> bool:
    return word[:1].isupper()


def _sentence_initial(text: str, start: int) -> bool:
    before = text[:start].rstrip(" \t\"'«„“(—–-")
    return not before or before[-1] in ".!?\n"


def _adjective_head(word: str) -> set[str]:
    """Cases in which a capitalised Russian word reads first as an adjective (empty otherwise)."""
    if not _CYRILLIC.search(word):
        return set()
    parses = _parses(word.lower())
    return _cases(word, "ADJF") if parses and parses[0].tag.POS == "ADJF" else set()


def _noun_phrase_tail(text: str, tokens: list[re.Match], at: int, head: str, most: int = 4) -> int:
    """How many lowercase words from `at` finish a Russian name headed by a capitalised adjective.

    «Московский государственный университет», «Российской империи»: lowercase adjectives
    that agree in case with the head, then one agreeing noun; 0 when no noun closes it.
    """
    cases = _adjective_head(head)
    for j in range(at, min(at + most, len(tokens))):
        word = tokens[j].group()
        if not cases or not _CYRILLIC.search(word) or not word[:1].islower() or is_stop(word):
            return 0
        if j > at and _BREAK.search(text[tokens[j - 1].end() : tokens[j].start()]):
            return 0
        if cases & _cases(word, "NOUN"):
            return j - at + 1
        cases &= _cases(word, "ADJF")
    return 0


def capitalised_spans(text: str) -> list[str]:
    """Maximal runs of capitalised words (any script), joined over connectors, broken at punctuation.

    Russian: a capitalised adjective takes the lowercase noun phrase that agrees with it, and a
    lone sentence-initial word that the dictionary knows only as a common word is not a name.
    """
    spans: list[str] = []
    span: list[str] = []
    span_start = 0

    def close() -> None:
        while span and span[-1].lower() in _CONNECTORS:
            span.pop()
        # «Население Москвы» at a sentence start: the common noun is capitalised only by its place.
        if (len(span) > 1 and _CYRILLIC.search(span[0]) and _sentence_initial(text, span_start)
                and _is_known_common(span[0]) and not _adjective_head(span[0])):
            span.pop(0)
            if span[0].lower() in _CONNECTORS:
                span.clear()
        # A lone sentence-initial stopword ("The", "Он") is not an entity.
        lone = len(span) == 1
        if span and not (lone and is_stop(span[0])) and not (
                lone and _CYRILLIC.search(span[0]) and _sentence_initial(text, span_start)
                and _is_known_common(span[0])):
            spans.append(" ".join(span))
        span.clear()

    tokens = list(_WORD.finditer(text))
    prev_end = 0
    i = 0
    while i < len(tokens):
        m = tokens[i]
        word = m.group()
        if span and _BREAK.search(text[prev_end : m.start()]):
            close()
        prev_end = m.end()
        if _capitalised(word) or (word[0].isdigit() and span):
            if not span and is_stop(word):
                i += 1
                continue
            if not span:
                span_start = m.start()
            span.append(word)
        elif span and word.lower() in _CONNECTORS:
            span.append(word)
        else:
            tail = _noun_phrase_tail(text, tokens, i, span[-1]) if span else 0
            if tail:
                span.extend(t.group() for t in tokens[i : i + tail])
                prev_end = tokens[i + tail - 1].end()
                i += tail - 1
            close()
        i += 1
    close()
    return spans


def extract_entities(clause: str) -> list[str]:
    """Quoted titles, capitalised spans (outside the quotes) and years, in order of appearance."""
    found = [m.group(1).strip() for m in _QUOTED.finditer(clause)]
    found += capitalised_spans(_QUOTED.sub(" , ", clause))
    found += _YEAR.findall(clause)
    return found


def title_aliases(title: str) -> list[str]:
    """Normalised names a titled scene answers to: 'Brother (Pearl Jam song)' -> that, and 'brother'."""
    bare = re.sub(r"\s*\(.*?\)\s*", " ", title).strip()
    return [a for a in dict.fromkeys([norm(title), norm(bare), norm(bare.split(",")[0])]) if a]


def terms_of(text: str) -> list[str]:
    """Lower-cased content words (with repeats), for the BM25 index."""
    out = []
    for word in _WORD.findall(text.lower().replace("’", "'")):
        if word.endswith("'s"):
            word = word[:-2]
        if len(word) >= 2 and not is_stop(word):
            out.append(lemma(word) if _CYRILLIC.search(word) else word)  # «Москве», «Москвы» -> москва
    return out


def scene_keys(text: str, title: str | None = None) -> dict[str, int]:
    """The couplings index's view of a scene: entity keys (title aliases included) and term counts."""
    keys: dict[str, int] = {}
    for alias in title_aliases(title) if title else []:
        keys["e:" + alias] = 1
    for entity in extract_entities(text):
        key = entity_key(entity)
        if key != "e:" and not is_stop(key[2:]):
            keys[key] = 1
    for term in terms_of(f"{title} {text}" if title else text):
        keys[term_key(term)] = keys.get(term_key(term), 0) + 1
    return keys


def parse(text: str, title: str | None = None) -> Parse:
    """Normalise `text` and pull out its clauses, entities and terms (deduplicated by key)."""
    clean = normalise(text)
    clauses = split_clauses(clean)
    entities: dict[str, str] = {}
    terms: dict[str, str] = {}
    if title:
        entities.setdefault(entity_key(title), normalise(title))
    for clause in clauses:
        for ent in extract_entities(clause):
            key = entity_key(ent)
            if key != "e:" and not is_stop(key[2:]):
                entities.setdefault(key, ent)
        for term in terms_of(clause):
            terms.setdefault(term_key(term), term)
    return Parse(
        text=clean,
        language=language_of(clean),  # type: ignore[arg-type]
        clauses=clauses,
        entities=list(entities.values()),
        terms=list(terms.values()),
    )


_CYR_TO_LATIN = str.maketrans({
    "а": "a", "б": "b", "в": "v", "г": "g", "д": "d", "е": "e", "ё": "e", "ж": "zh", "з": "z", "и": "i", "й": "y",
    "к": "k", "л": "l", "м": "m", "н": "n", "о": "o", "п": "p", "р": "r", "с": "s", "т": "t", "у": "u", "ф": "f",
    "х": "kh", "ц": "ts", "ч": "ch", "ш": "sh", "щ": "shch", "ъ": "", "ы": "y", "ь": "", "э": "e", "ю": "yu",
    "я": "ya"})
# Spellings that sound alike once transliterated: Panthers ~ Пэнтерс, Luther ~ Лютер, Broncos ~ Бронкос.
_SOUND = [("ph", "f"), ("th", "t"), ("kh", "h"), ("ck", "k"), ("c", "k"), ("q", "k"), ("w", "v"), ("x", "ks"),
          ("j", "dzh"), ("y", "i"), ("h", "")]


def sound_key(word: str) -> str:
    """A rough script-free spelling of a name: transliterated to Latin, alike-sounding letters merged."""
    key = word.lower().translate(_CYR_TO_LATIN)
    for a, b in _SOUND:
        key = key.replace(a, b)
    return re.sub(r"(.)\1+", r"\1", key)


def names_across_scripts(text: str, name: str, threshold: float = 0.75) -> bool:
    """Does `text` name `name` in the other script (Cyrillic for Latin or the reverse)?

    A word of the name (4+ letters) and a word of the text written in the other script whose
    sound keys are alike; what the same-script check (`norm`) cannot see across languages.
    """
    from difflib import SequenceMatcher

    cyrillic_name = bool(_CYRILLIC.search(name))
    others = {sound_key(w) for w in words(text) if len(w) >= 4 and bool(_CYRILLIC.search(w)) != cyrillic_name}
    for part in words(name):
        if len(part) < 4 or part.isdigit():
            continue
        key = sound_key(part)
        if any(SequenceMatcher(None, key, other).ratio() >= threshold for other in others):
            return True
    return False


def compose_scene(scene_id: str, parsed: Parse, title: str | None = None, meta: dict | None = None) -> Scene:
    """Components from the parse; couplings between components that share a clause."""
    components = [Component(text=title, kind="title", key=entity_key(title))] if title else []
    components += [Component(text=e, kind="entity", key=entity_key(e)) for e in parsed.entities
                   if not title or entity_key(e) != entity_key(title)]
    components += [Component(text=t, kind="term", key=term_key(t)) for t in parsed.terms]
    couplings: list[Coupling] = []
    seen: set[tuple[str, str]] = set()
    for clause in parsed.clauses:
        in_clause = [entity_key(e) for e in extract_entities(clause)]
        if title:
            in_clause.insert(0, entity_key(title))  # the subject of a titled passage is in every clause
        for n, a in enumerate(in_clause):
            for b in in_clause[n + 1 :]:
                if a != b and (a, b) not in seen:
                    seen.add((a, b))
                    couplings.append(Coupling(source=a, target=b, relation="co-occurs"))
    return Scene(id=scene_id, text=parsed.text, title=title, components=components, couplings=couplings,
                 meta=meta or {})
