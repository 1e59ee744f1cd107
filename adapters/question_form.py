"""What a question asks for: its expected answer type, its relation words and, for a
comparison, the items it compares and how. English and Russian question forms; no model.

    >>> form_of("Where was the director of the film Gaby: A True Story born?").kind
    'place'
    >>> form_of("Which film came out first, Blind Shaft or The Mask Of Fu Manchu?").options
    ['Blind Shaft', 'The Mask Of Fu Manchu']
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from adapters.lexicon import is_stop, language_of, normalise

AnswerKind = Literal["person", "place", "date", "number", "choice", "yesno", "entity"]
Order = Literal["min", "max", "same", ""]

# Words whose stems name the relation the answer stands in (born, directed ...) are the question's
# content words; these map a question's noun to the verb its evidence sentence uses, both languages.
RELATION_SYNONYMS = {
    "birth": ("born", "birth"), "birthplace": ("born", "birth"), "born": ("born", "birth"),
    "death": ("died", "death", "dead"), "die": ("died", "death"), "died": ("died", "death"),
    "director": ("directed", "director"), "directed": ("directed", "director"),
    "spouse": ("married", "wife", "husband", "spouse"), "wife": ("married", "wife"), "husband": ("married", "husband"),
    "married": ("married", "wife", "husband", "spouse"),
    "founded": ("founded", "founder", "established"), "founder": ("founded", "founder", "established"),
    "released": ("released", "release", "premiered"), "release": ("released", "premiered"),
    "composer": ("composed", "composer", "music"), "author": ("written", "wrote", "author", "novel"),
    "wrote": ("written", "wrote", "author"), "written": ("written", "wrote", "author"),
    "mother": ("mother", "son", "daughter", "child", "parents"), "father": ("father", "son", "daughter", "child", "parents"),
    "old": ("age", "aged", "old", "years"), "age": ("age", "aged", "old"),
    "population": ("population", "inhabitants", "residents", "people"),
    "grandfather": ("grandson", "granddaughter", "grandfather", "grandchild"),
    "grandmother": ("grandson", "granddaughter", "grandmother", "grandchild"),
    "child": ("son", "daughter", "child", "children"), "son": ("son", "child"), "daughter": ("daughter", "child"),
    "родился": ("родил", "рожд"), "родилась": ("родил", "рожд"), "рождения": ("родил", "рожд"),
    "умер": ("умер", "смерт", "скончал"), "умерла": ("умер", "смерт", "скончал"), "смерти": ("умер", "смерт"),
    "основан": ("основ",), "основал": ("основ",), "режиссёр": ("режисс", "снял"), "режиссер": ("режисс", "снял"),
}

# Comparative words: which end of the compared attribute the answer is, and what attribute.
_EARLY = ("first", "earlier", "earliest", "older", "oldest", "before", "sooner", "previously",
          "раньше", "первым", "первой", "первый", "старше", "ранее", "прежде")
_LATE = ("later", "last", "latest", "younger", "youngest", "recently", "after", "newer", "newest",
         "позже", "позднее", "моложе", "младше", "последним", "последней")
_MORE = ("more", "most", "larger", "largest", "bigger", "biggest", "taller", "tallest", "higher", "highest",
         "longer", "longest", "greater", "greatest", "heavier", "больше", "выше", "длиннее", "крупнее", "старше")
_LESS = ("fewer", "less", "least", "smaller", "smallest", "shorter", "shortest", "lower", "lowest", "lighter",
         "меньше", "ниже", "короче")
_DATE_ORDER = ("older", "oldest", "younger", "youngest", "старше", "моложе", "младше")

_AUX_EN = ("is", "are", "was", "were", "do", "does", "did", "can", "could", "has", "have", "had", "will",
           "would", "should", "shall", "may", "might", "must")


@dataclass
class QuestionForm:
    """The shape of the answer a question expects."""

    kind: AnswerKind
    language: str
    relation: list[str] = field(default_factory=list)  # lower-cased content words of the question
    options: list[str] = field(default_factory=list)  # the items a choice or yes/no question compares
    order: Order = ""
    attribute: Literal["date", "number", "place", "nationality", "kind", ""] = ""
    focus: list[str] = field(default_factory=list)  # the relation the answer itself stands in ("born", "mother")


def _words(text: str) -> list[str]:
    return [re.sub(r"['’]s$", "", w) for w in re.findall(r"\w+(?:[-'’]\w+)*", text.lower())]


def options_of(question: str) -> list[str]:
    """The two (or more) items of "..., A or B?" / "A или B?" and of "Are A and B both ...?"."""
    q = normalise(question).rstrip(" ?.!")
    # "Which film came out first, A or B" / "Кто родился раньше: A или B"
    m = re.search(r"[,:]\s*(.+?)\s+(?:or|или)\s+(.+)$", q, flags=re.IGNORECASE)
    if m and len(m.group(1)) < 120 and len(m.group(2)) < 120:
        return [m.group(1).strip(" \"'«»"), m.group(2).strip(" \"'«»")]
    # "Was A or B born first" / "Who was born first, A or B" without a comma
    m = re.search(r"^(?:was|were|is|are|did|does|do|who|which|what)\s+(?:\w+\s+)??(.+?)\s+or\s+(.+?)"
                  r"(?:\s+(?:born|founded|released|formed|established|created|published|died|older|younger|"
                  r"larger|smaller)\b.*)?$", q, flags=re.IGNORECASE)
    if m and m.group(1)[:1].isupper() and m.group(2)[:1].isupper():
        return [m.group(1).strip(" \"'«»"), m.group(2).strip(" \"'«»")]
    # "Which band was formed first The Exies or Circus Diablo", "Between A and B, which ..."
    m = re.search(r"\b(?:first|earlier|later|older|younger|more|less|larger|smaller|longer|раньше|позже)\s+"
                  r"(?:the\s+)?([A-ZА-ЯЁ\"«].+?)\s+(?:or|или)\s+(.+)$", q)
    if m and len(m.group(1)) < 120:
        return [m.group(1).strip(" \"'«»"), m.group(2).strip(" \"'«»")]
    m = re.search(r"^(?:between|из|между)\s+(.+?)\s+(?:and|и)\s+(.+?),", q, flags=re.IGNORECASE)
    if m:
        return [m.group(1).strip(" \"'«»"), m.group(2).strip(" \"'«»")]
    # "Are A and B both ...", "Do both films A and B have ...", "Являются ли A и B ..."
    m = re.search(r"^(?:are|were|is|was|do|does|did|have|has|являются ли|были ли|это)\s+(?:both\s+)?"
                  r"(?:(?:the\s+)?(?:films?|movies?|bands?|magazines?|people|men|women)\s+)?(.+?)\s+(?:and|и)\s+"
                  r"(.+?)\s+(?:both|each|the same|from|located|of|have|had|in|являются|были|из|родом)\b",
                  q, flags=re.IGNORECASE)
    if m:
        return [_named_prefix(m.group(1).strip(" ,\"'«»")), _named_prefix(m.group(2).strip(" ,\"'«»"))]
    return []


def _named_prefix(text: str) -> str:
    """'Jung Eun-ji members' -> 'Jung Eun-ji': a name ends where its capitalised words (and connectors) do."""
    words = text.split()
    keep = 1
    for n, w in enumerate(words[1:], 1):
        if w[:1].isupper() or w[:1].isdigit() or w.lower() in ("of", "the", "and", "de", "von", "van", "и"):
            keep = n + 1
        else:
            break
    return " ".join(words[:keep])


# Nouns that name a quantity: "what was the population / the average household size / the temperature".
_QUANTITY_NOUNS_EN = (r"population|percentage|percent|proportion|size|amount|number|temperature|distance|length|"
                      r"height|width|depth|weight|mass|speed|rate|cost|price|salary|budget|revenue|area|age|"
                      r"score|total|value|capacity|attendance|density")
_QUANTITY_NOUNS_RU = (r"численност|населени|процент|дол|размер|количеств|температур|расстояни|длин|высот|"
                      r"ширин|глубин|вес|масс|скорост|стоимост|цен|зарплат|бюджет|площад|возраст|счёт|счет")


def _kind(q: str, words: list[str], language: str, options: list[str]) -> AnswerKind:
    first = words[0] if words else ""
    head = " ".join(words[:4])
    if language == "ru":
        if re.search(r"\bли\b", q.lower()) and not re.search(r"\b(какой|какая|какое|какие|который|которая|"
                                                               r"кто|где|когда|сколько)\b", q.lower()):
            return "yesno"
        if options and re.search(r"\bили\b", q.lower()):
            return "choice"
        # "Сколько лет было X, когда ...": the question opens on a quantity, whatever a later "когда" says
        date = re.search(r"\b(в каком году|в какой год|когда|какого числа|в каком веке|в какое время|какой датой)\b",
                         q.lower())
        many = re.search(r"\bсколько\b", q.lower())
        if many and (not date or many.start() < date.start()):
            return "number"
        if date:
            return "date"
        if re.search(r"\b(где|куда|откуда|в каком городе|в какой стране|в каком месте)\b", q.lower()):
            return "place"
        if re.search(r"\b(кто|кого|кому|кем|чей|чья|чьё|чьи)\b", q.lower()):
            return "person"
        if re.match(r"(?:\w+\s+){0,2}?(?:какова|каков|каковы|какой была|какая|какой)\s+(?:\w+\s+)?(?:"
                    + _QUANTITY_NOUNS_RU + r")", q.lower()):
            return "number"
        return "entity"
    if first in _AUX_EN and options and " or " in q.lower() and not re.search(r"\bboth\b", q.lower()):
        return "choice"
    if first in _AUX_EN and not re.search(r"\b(who|what|which|where|when|how)\b", head):
        return "yesno"
    if options and re.search(r"\bor\b|^between\b", q.lower()):
        return "choice"
    # "How old was X when ...": the question opens on a quantity, whatever a later "when" says
    quantity = r"\bhow (many|much|long|old|far|tall|big|large|high)\b(?! ago)|\bwhat (number|percentage|amount)\b"
    if re.match(r"(?:\w+\s+){0,3}?" + quantity, q.lower()):
        return "number"
    if re.search(r"\b(what|which) (year|date|day|month|century|decade)\b|\bwhen\b|\bhow long ago\b", q.lower()):
        return "date"
    if re.search(quantity, q.lower()):
        return "number"
    if re.search(r"\bwhere\b|\b(what|which) (city|country|town|state|place|region|county|village|continent|"
                 r"location|province|island)\b|\bplace of (birth|death)\b", q.lower()):
        return "place"
    if re.search(r"\b(who|whom|whose)\b", q.lower()):
        return "person"
    if re.match(r"(?:\w+\s+){0,2}?(?:what|which)\s+(?:(?:is|was|were|are)\s+)?(?:the\s+)?(?:\w+(?:'s)?\s+){0,2}?"
                r"(?:" + _QUANTITY_NOUNS_EN + r")\b", q.lower()):
        return "number"  # "What was Warsaw's population in 1901?" asks for a quantity
    return "entity"


def _order(words: list[str]) -> Order:
    if any(w in _EARLY for w in words):
        return "min"
    if any(w in _LATE for w in words):
        return "max"
    if any(w in _MORE for w in words):
        return "max"
    if any(w in _LESS for w in words):
        return "min"
    return ""


def _attribute(words: list[str], kind: AnswerKind) -> str:
    if any(w in _DATE_ORDER for w in words) or any(w in _EARLY + _LATE for w in words):
        return "date"
    if any(w in _MORE + _LESS for w in words):
        return "number"
    if {"country", "nationality", "страны", "стране", "национальности", "гражданства"} & set(words):
        return "nationality"
    if kind == "yesno":
        return "kind"
    return ""


def form_of(question: str) -> QuestionForm:
    """The expected answer type, relation words and compared items of a question."""
    q = normalise(question)
    language = language_of(q)
    words = _words(q)
    options = options_of(q)
    kind = _kind(q, words, language, options)
    if kind not in ("choice", "yesno"):
        options = []
    relation = [w for w in words if not is_stop(w) and len(w) > 2 and w not in _QUESTION_WORDS]
    order: Order = _order(words) if kind == "choice" else ""
    if kind == "yesno":
        order = "same" if re.search(r"\b(same|тот же|той же|одной|одного|одном)\b", q.lower()) else ""
    return QuestionForm(kind=kind, language=language, relation=relation, options=options, order=order,
                        attribute=_attribute(words, kind) if kind in ("choice", "yesno") else "",
                        focus=_attribute_verbs(words) if kind == "choice" else _focus(q, relation))


# What a comparison compares: the event its items are dated by ("born first", "died earlier", "came out").
_EVENTS = {"born": "born", "birth": "born", "older": "born", "oldest": "born", "younger": "born", "youngest": "born",
           "died": "died", "die": "died", "death": "died", "released": "released", "release": "released",
           "came": "released", "founded": "founded", "formed": "founded", "established": "founded",
           "published": "published", "opened": "opened", "built": "built", "created": "created",
           "родился": "родил", "родилась": "родил", "старше": "родил", "моложе": "родил", "младше": "родил",
           "умер": "умер", "умерла": "умер", "основан": "основ", "основана": "основ", "вышел": "вышел"}


def _attribute_verbs(words: list[str]) -> list[str]:
    return list(dict.fromkeys(_EVENTS[w] for w in words if w in _EVENTS))


_SLOT_NOUNS = {"place", "date", "year", "day", "name", "city", "country", "cause", "type", "kind", "number",
               "место", "дата", "год", "название", "город", "страна", "причина"}


def _focus(question: str, relation: list[str]) -> list[str]:
    """The relation of the answer itself: in a nested question ("Where was the director of film X
    born?") the outermost one — the closing verb ("born") or the head noun ("Who is the mother of ...").
    """
    q = question.strip().rstrip("?!. ")
    out: list[str] = []
    head = re.match(r"^(?:who|whom|what|which|кто|что|какой|какая|каков|какова)\s+(?:is|was|are|were|являлся|"
                    r"является|была|был)\s+(?:the\s+)?([\w-]+)(?:\s+(?:of|в)\s+(?:the\s+)?([\w-]+))?", q,
                    flags=re.IGNORECASE)
    if head:
        noun, after = head.group(1).lower(), (head.group(2) or "").lower()
        if noun in relation and noun not in _SLOT_NOUNS:
            out.append(noun)
        if noun in _SLOT_NOUNS and after in relation:
            out.append(after)  # "place of birth" -> birth
    last = re.search(r"(\w+)$", q)
    if last and last.group(1) in relation and last.group(1)[:1].islower() and last.group(1) not in _CLASS_NOUNS:
        out.append(last.group(1))  # "... born", "... die", "... founded"
    # "... founded by whom?", "... was written by who?", "... based in what state?": the verb before the slot.
    tail = re.search(r"(\w+)\s+(?:by|in|of|on|at|from|to|with|for|into|as)?\s*(?:who|whom|what|which|when|where|"
                     r"кто|кем|кого|где|когда)(?:\s+\w+)?\W*$", q, flags=re.IGNORECASE)
    if tail and tail.group(1).lower() in relation:
        out.append(tail.group(1).lower())
    return list(dict.fromkeys(out))


_CLASS_NOUNS = {"city", "state", "country", "person", "man", "woman", "place", "town", "film", "movie", "band",
                "group", "team", "company", "year", "name", "part", "area", "region", "body", "one", "thing",
                "город", "страна", "человек", "место", "фильм", "группа", "год", "часть"}


_QUESTION_WORDS = {"who", "whom", "whose", "what", "which", "where", "when", "why", "how", "many", "much",
                   "кто", "кого", "кому", "кем", "чей", "чья", "что", "какой", "какая", "какое", "какие", "каком",
                   "какого", "который", "которая", "где", "когда", "сколько", "почему", "зачем", "куда", "откуда"}
