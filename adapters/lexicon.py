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
_CONNECTORS = {"of", "de", "da", "del", "della", "di", "van", "von", "der", "den", "la", "le", "du", "the", "and", "y"}

_WORD = re.compile(r"[^\W_]+(?:[-'’][^\W_]+)*", re.UNICODE)
_QUOTED = re.compile(r"[\"“«„]([^\"”»“]{2,80})[\"”»“]")
_YEAR = re.compile(r"\b(1[0-9]{3}|20[0-9]{2})\b")
_CLAUSE_SPLIT = re.compile(r"(?<=[.!?;])\s+(?=[\"“«(]?[A-ZА-ЯЁ0-9])|\n+")


def normalise(text: str) -> str:
    """Unicode NFC, unified quotes/dashes, collapsed whitespace."""
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


def entity_key(text: str) -> str:
    return "e:" + " ".join(w.lower() for w in _WORD.findall(text))


def term_key(word: str) -> str:
    return "t:" + stem(word.lower())


def stem(word: str) -> str:
    """A very light stemmer: enough that 'films'/'film' and 'фильма'/'фильм' couple."""
    if re.fullmatch(r"[а-яё-]+", word):
        for ending in ("ями", "ами", "ого", "его", "ому", "ему", "ыми", "ими", "ой", "ей", "ом", "ем", "ах", "ях",
                       "ов", "ев", "ий", "ый", "ая", "яя", "ое", "ее", "ые", "ие", "а", "я", "ы", "и", "у", "ю", "е", "о"):
            if len(word) - len(ending) >= 4 and word.endswith(ending):
                return word[: -len(ending)]
        return word
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 4 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def _is_stop(word: str) -> bool:
    low = word.lower()
    return low in _STOP_EN or low in _STOP_RU


def _capitalised(word: str) -> bool:
    return word[:1].isupper() or (word.isupper() and len(word) > 1)


def extract_entities(clause: str) -> list[str]:
    """Capitalised spans (joined over connectors), quoted titles and years, in order of appearance."""
    found: list[str] = [m.group(1).strip() for m in _QUOTED.finditer(clause)]
    words = [(m.group(0), m.start()) for m in _WORD.finditer(_QUOTED.sub(" , ", clause))]
    span: list[str] = []

    def close() -> None:
        while span and span[-1].lower() in _CONNECTORS:
            span.pop()
        # A lone sentence-initial stopword ("The", "Он") is not an entity.
        if span and not (len(span) == 1 and _is_stop(span[0])):
            found.append(" ".join(span))
        span.clear()

    for i, (word, _) in enumerate(words):
        if _capitalised(word) and not word.isdigit():
            if not span and _is_stop(word):
                continue
            span.append(word)
        elif span and word.lower() in _CONNECTORS and i + 1 < len(words) and _capitalised(words[i + 1][0]):
            span.append(word)
        else:
            close()
    close()
    found.extend(_YEAR.findall(clause))
    return found


def extract_terms(clause: str) -> list[str]:
    return [w for w in _WORD.findall(clause) if len(w) >= 3 and not w.isdigit() and not _is_stop(w) and not _capitalised(w)]


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
            if key != "e:":
                entities.setdefault(key, ent)
        for term in extract_terms(clause):
            terms.setdefault(term_key(term), term.lower())
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
