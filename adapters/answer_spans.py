"""Candidate answer spans in a sentence: dates, numbers, names and short content-word runs.

English and Russian. A span keeps its word offsets, so the reader can measure how far
it sits from the question's relation words, and a parsed value where it has one (a
date as (year, month, day), a number as a float) so comparisons can order them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from adapters.lexicon import capitalised_spans, is_stop

SpanKind = Literal["date", "number", "name", "phrase"]

_MONTHS_EN = ["january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
              "november", "december"]
_MONTHS_RU = ["январ", "феврал", "март", "апрел", "ма", "июн", "июл", "август", "сентябр", "октябр", "ноябр", "декабр"]
_MONTH_EN = r"(?:January|February|March|April|May|June|July|August|September|October|November|December)"
_MONTH_RU = (r"(?:января|февраля|марта|апреля|мая|июня|июля|августа|сентября|октября|ноября|декабря|"
             r"январь|февраль|март|апрель|май|июнь|июль|август|сентябрь|октябрь|ноябрь|декабрь)")
_YEAR = r"(?:1[0-9]{3}|20[0-9]{2}|[1-9][0-9]{0,2}(?=\s*(?:BC|AD|BCE|CE|до н\.\s*э\.|н\.\s*э\.)))"
_DATE = re.compile(
    rf"\b(?:\d{{1,2}}(?:st|nd|rd|th)?\s+{_MONTH_EN},?\s+{_YEAR}"     # 12 June 1516
    rf"|{_MONTH_EN}\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+{_YEAR}"         # June 12, 1516
    rf"|{_MONTH_EN}\s+{_YEAR}"                                       # June 1516
    rf"|\d{{1,2}}\s+{_MONTH_RU}\s+{_YEAR}(?:\s+(?:года|г\.))?"        # 12 июня 1516 года
    rf"|{_MONTH_RU}\s+{_YEAR}(?:\s+(?:года|г\.))?"                   # июнь 1516
    rf"|{_YEAR}s?(?:\s+(?:BC|AD|BCE|CE|года|году|год|г\.))?"          # 1516, 1990s, 1516 года
    rf"|\d{{1,2}}(?:st|nd|rd|th)[\s-]+century|[XVI]+\s+век[аеу]?)\b",
    flags=re.IGNORECASE,
)
_NUMBER_WORDS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
                 "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15, "sixteen": 16,
                 "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20, "thirty": 30, "forty": 40,
                 "fifty": 50, "hundred": 100, "thousand": 1000, "once": 1, "twice": 2,
                 "один": 1, "одна": 1, "два": 2, "две": 2, "три": 3, "четыре": 4, "пять": 5, "шесть": 6, "семь": 7,
                 "восемь": 8, "девять": 9, "десять": 10, "дважды": 2, "трижды": 3}
_SCALE = r"(?:\s+(?:million|billion|trillion|thousand|hundred|млн|млрд|тыс\.?|миллиона|миллионов|миллиард\w*|тысяч\w*))?"
_UNIT = (r"(?:\s*%|\s*(?:percent|per cent|процент\w*|km|kilometres|kilometers|miles|metres|meters|feet|ft|m|kg|"
         r"people|inhabitants|residents|жителей|человек|км|метров|м)\b)?")
_NUMBER = re.compile(
    rf"(?:[$€£]\s*)?\b\d{{1,3}}(?:[,\s]\d{{3}})+(?:\.\d+)?{_SCALE}{_UNIT}"
    rf"|(?:[$€£]\s*)?\b\d+(?:[.,]\d+)?{_SCALE}{_UNIT}"
    rf"|\b(?:{'|'.join(_NUMBER_WORDS)})\b{_SCALE}{_UNIT}",
    flags=re.IGNORECASE,
)
_WORD = re.compile(r"\w+(?:[-'’.]\w+)*", re.UNICODE)
_STARTERS = {"born", "died", "located", "based", "founded", "married", "raised", "educated", "released", "directed",
             "written", "produced", "considered", "known", "named", "described", "following", "despite", "today",
             "родился", "родилась", "умер", "умерла", "основан", "основана", "расположен", "расположена"}
_CONNECTORS_AT_START = {"in", "at", "of", "on", "the", "and", "for", "в", "и"}
_PHRASE_INNER = {"of", "the", "and", "de", "la", "von", "van", "и"}
MAX_PHRASE_WORDS = 5


@dataclass
class Span:
    text: str
    kind: SpanKind
    start: int  # word offset of the first word in the sentence
    end: int  # word offset after the last word
    value: tuple[int, int, int] | float | None = None
    char: int = 0  # character offset in the sentence


def parse_date(text: str) -> tuple[int, int, int] | None:
    """(year, month, day) of a date span; month/day 0 when absent; BC years negative."""
    low = text.lower()
    century = re.match(r"(\d{1,2})(?:st|nd|rd|th)", low)
    if century and "century" in low:
        return ((int(century.group(1)) - 1) * 100 + 50, 0, 0)
    year_m = re.search(r"(\d{1,4})(?!.*\d{3,4})", low)
    if not year_m:
        return None
    year = int(year_m.group(1))
    if re.search(r"\b(bc|bce)\b|до н", low):
        year = -year
    month = 0
    for n, name in enumerate(_MONTHS_EN):
        if name in low:
            month = n + 1
            break
    else:
        for n, stem in enumerate(_MONTHS_RU):
            if re.search(rf"\b{stem}\w*", low) and (stem != "ма" or re.search(r"\bма[йя]\b", low)):
                month = n + 1
                break
    day_m = re.search(r"\b(\d{1,2})(?:st|nd|rd|th)?\b", re.sub(r"\d{3,4}", "", low))
    day = int(day_m.group(1)) if day_m and month else 0
    return (year, month, day)


def parse_number(text: str) -> float | None:
    low = text.lower().replace("\u00a0", " ")
    scale = 1.0
    for word, factor in (("trillion", 1e12), ("billion", 1e9), ("млрд", 1e9), ("миллиард", 1e9), ("million", 1e6),
                         ("млн", 1e6), ("миллион", 1e6), ("thousand", 1e3), ("тыс", 1e3), ("hundred", 1e2)):
        if word in low:
            scale = factor
            break
    digits = re.search(r"\d+(?:[,\s]\d{3})*(?:\.\d+)?", low)
    if digits:
        raw = digits.group().replace(" ", "")
        raw = raw.replace(",", "") if re.search(r",\d{3}\b", raw) else raw.replace(",", ".")
        try:
            return float(raw) * scale
        except ValueError:
            return None
    word = re.search(r"\w+", low)
    return float(_NUMBER_WORDS[word.group()]) * scale if word and word.group() in _NUMBER_WORDS else None


def _word_index(sentence: str) -> list[tuple[int, int]]:
    return [(m.start(), m.end()) for m in _WORD.finditer(sentence)]


def _to_words(bounds: list[tuple[int, int]], start: int, end: int) -> tuple[int, int]:
    first = next((n for n, (s, e) in enumerate(bounds) if e > start), len(bounds))
    last = next((n for n, (s, e) in enumerate(bounds) if s >= end), len(bounds))
    return first, max(last, first + 1)


def spans_of(sentence: str) -> list[Span]:
    """Every candidate span of a sentence: dates, numbers, names, then content-word phrases."""
    bounds = _word_index(sentence)
    out: list[Span] = []
    taken: list[tuple[int, int]] = []
    for m in _DATE.finditer(sentence):
        w0, w1 = _to_words(bounds, m.start(), m.end())
        out.append(Span(m.group().strip(), "date", w0, w1, parse_date(m.group()), m.start()))
        taken.append((m.start(), m.end()))
    for m in _NUMBER.finditer(sentence):
        if any(s <= m.start() < e for s, e in taken) or not m.group().strip():
            continue
        w0, w1 = _to_words(bounds, m.start(), m.end())
        out.append(Span(m.group().strip(), "number", w0, w1, parse_number(m.group()), m.start()))
    cursor = 0
    for name in _split_names(capitalised_spans(sentence)):
        at = sentence.find(name, cursor)
        if at < 0:
            continue
        cursor = at + len(name)
        first, _, rest = name.partition(" ")
        if at == 0 and first.lower() in _STARTERS:  # "Born in Bucharest": capitalised only as the first word
            if not rest:
                continue
            name, at = rest, at + len(first) + 1
            while name.split(" ", 1)[0].lower() in _CONNECTORS_AT_START and " " in name:
                head, name = name.split(" ", 1)
                at += len(head) + 1
        if name.endswith(("'s", "’s")):
            name = name[:-2]
        suffix = re.search(r"-[a-zа-яё]+\b.*$", name)  # "Academy Awards-winning Burmese" is "Academy Awards"
        if suffix and suffix.start() > 0:
            name = name[: suffix.start()]
        w0, w1 = _to_words(bounds, at, at + len(name))
        if re.fullmatch(r"[\d\s.,]+", name):
            continue
        out.append(Span(name, "name", w0, w1, None, at))
    for m in re.finditer(r"[\"“«]([^\"”»“]{2,80})[\"”»]", sentence):
        w0, w1 = _to_words(bounds, m.start(1), m.end(1))
        out.append(Span(m.group(1).strip(), "name", w0, w1, None, m.start(1)))
    out += _phrases(sentence, bounds)
    return out


_SPLIT = re.compile(r"\s+(?:in|and|on|at|for|и|в)\s+|^(?:\d+\s+)?" + _MONTH_EN + r"(?:\s+\d+)*(?:\s+in)?\s+")


def _split_names(spans: list[str]) -> list[str]:
    """'Bethel University in Arden Hills' is two names; 'July 1981 in Botswana' is a date and a name."""
    out = []
    for span in spans:
        out += [part for part in _SPLIT.split(span) if part and part.strip()]
        if len(out) and out[-1] != span and _SPLIT.search(span):
            out.append(span)  # the whole run stays a candidate too ("Trinidad and Tobago")
    return out


def _phrases(sentence: str, bounds: list[tuple[int, int]]) -> list[Span]:
    """Runs of content words (joined over 'of', 'the' ...), broken at punctuation: the fallback answers."""
    out: list[Span] = []
    run: list[int] = []

    def close() -> None:
        while run and is_stop(sentence[slice(*bounds[run[-1]])]):
            run.pop()
        if run and len(run) <= MAX_PHRASE_WORDS:
            s, e = bounds[run[0]][0], bounds[run[-1]][1]
            out.append(Span(sentence[s:e], "phrase", run[0], run[-1] + 1, None, s))
        run.clear()

    for n, (s, e) in enumerate(bounds):
        word = sentence[s:e]
        gap = sentence[bounds[n - 1][1] : s] if n else ""
        if run and re.search(r"[,;:()\"!?«»“”]|\.\s", gap):
            close()
        if not is_stop(word):
            run.append(n)
        elif run and word.lower() in _PHRASE_INNER:
            run.append(n)
        else:
            close()
    close()
    return out
