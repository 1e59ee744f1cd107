"""The rule-based interpreter: clauses, entities and salient terms of a text.

English and Russian (Latin and Cyrillic scripts). No model: capitalised spans,
quoted titles and years are entities; content words are terms. Keys are
normalised forms used to couple scenes that mention the same thing.
"""

from __future__ import annotations

import re
import unicodedata

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
# Lowercase words allowed inside a capitalised span ("University of Copenhagen", "Ludwig van Beethoven").
_CONNECTORS = {"of", "the", "and", "de", "la", "le", "von", "van", "der", "den", "du", "for", "&", "y", "di", "da",
               "del", "della", "on", "in", "и"}
# Words that are capitalised only because they start a sentence or are generic.
_GENERIC = set("""also one two first second new later known called named based according however many much several
besides s t don should now against above below further doing myself ourselves yourself yourselves himself
herself itself themselves""".split())

_WORD = re.compile(r"\w+(?:[-'’.]\w+)*", re.UNICODE)
_QUOTED = re.compile(r"[\"“«„]([^\"”»“]{2,80})[\"”»“]")
_YEAR = re.compile(r"\b(1[0-9]{3}|20[0-9]{2})\b")
_BREAK = re.compile(r"[,;:()\"!?«»“”]|\.\s")
_CLAUSE_SPLIT = re.compile(r"(?<=[.!?;])\s+(?=[\"“«(]?[A-ZА-ЯЁ0-9])|\n+")


def normalise(text: str) -> str:
    """Unicode NFC, unified quotes, collapsed whitespace."""
    text = unicodedata.normalize("NFC", text)
    text = text.replace("\u00a0", " ").replace("``", '"').replace("''", '"')
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
    return low in _STOP_EN or low in _STOP_RU or low in _GENERIC


def _capitalised(word: str) -> bool:
    return word[:1].isupper()


def capitalised_spans(text: str) -> list[str]:
    """Maximal runs of capitalised words (any script), joined over connectors, broken at punctuation."""
    spans: list[str] = []
    span: list[str] = []

    def close() -> None:
        while span and span[-1].lower() in _CONNECTORS:
            span.pop()
        # A lone sentence-initial stopword ("The", "Он") is not an entity.
        if span and not (len(span) == 1 and is_stop(span[0])):
            spans.append(" ".join(span))
        span.clear()

    prev_end = 0
    for m in _WORD.finditer(text):
        word = m.group()
        if span and _BREAK.search(text[prev_end : m.start()]):
            close()
        prev_end = m.end()
        if _capitalised(word) or (word[0].isdigit() and span):
            if not span and is_stop(word):
                continue
            span.append(word)
        elif span and word.lower() in _CONNECTORS:
            span.append(word)
        else:
            close()
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
            out.append(word)
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
