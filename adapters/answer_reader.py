"""The default Output Synthesizer: a short answer and the chain of evidence that leads to it.

No language model. It reads what the graph already has:
1. the question's form (`question_form`): the answer type, its relation words and, for a
   comparison, the compared items and which end wins;
2. the field's strongest scenes and the coupling graph: a scene is *reached* when it holds a
   question entity (hop 1) or when a reached scene names it, or shares a rare entity with it
   (the next hop). Scenes the chain does not reach never support the answer;
3. candidate spans (`answer_spans`) in the reached scenes' sentences that the question does
   not already hold, scored by type fit, by how many relation words their sentence carries
   and how close the span sits to them, and by the scene's resonance.
Comparisons extract the compared attribute for each item and compare it; yes/no questions
check the attribute (or the asked-about words) for each item. When nothing in the field
fits, it abstains and shows the closest scenes.
"""

from __future__ import annotations

import re
from functools import cache
from collections import deque
from difflib import SequenceMatcher
from dataclasses import dataclass, field

import numpy as np

from adapters.answer_spans import Span, spans_of
from adapters.lexicon import (capitalised_spans, has_cyrillic, is_stop, language_of, lemma, norm, split_clauses,
                              sound_key, terms_of, title_aliases)
from adapters.question_form import RELATION_SYNONYMS, QuestionForm, form_of
from state.models import Evidence, Recalled

ABSTAIN_EN = "Not in memory: no scene I hold answers this."
ABSTAIN_RU = "В памяти нет ответа: ни одна сцена его не содержит."
YES = {"en": "yes", "ru": "да"}
NO = {"en": "no", "ru": "нет"}
MAX_HOPS = 3
NESTED_HOP_BONUS = 0.3
MIN_SCORE = 0.6  # below it no span fits well enough: abstain
PARAPHRASE_MIN = 0.5  # cosine a sentence needs to answer by meaning alone
PARAPHRASE_SENTENCES = 3
# Across languages no relation word is shared: a sentence answers when its cosine stands this far (z over the
# store's scenes) above the question's mean. Answer sentences of Russian XQuAD questions over the English
# paragraphs sit at a median ~4.8; the best sentences for questions memory lacks at ~2.8-3.9 (90th pct <= 4.7).
CROSSED_Z = 4.0
ECHO_MIN = 0.75  # likeness of two transliterated words that makes one echo the other across scripts
ECHO_NAME = 0.8  # the same for a name's words, stricter: a name echoed wrongly admits a question memory lacks
# z of the strongest scene's cosine over the store: questions about a held scene sit at 4-6 (median ~5 with
# multilingual-e5-small on XQuAD), questions memory does not hold at ~3.3-3.9 (median; 90th percentile ~4.5-5).
HELD_Z = 4.8
NAMING_PENALTY = 0.3  # what a scene's sentences lose to its sentence that names the question's subject
OVERLAP_PENALTY = 0.3  # per share of a span's words the question already holds
SENTENCE_CACHE = 20_000  # scenes whose sentence vectors the reader keeps
CLOSEST = 3  # scenes shown when abstaining
_PLACE_CUES = {"in", "at", "from", "near", "в", "во", "из", "под"}
_DEATH_MARK = re.compile(r"\b(?:died|d\.|death|умер|умерла|ум\.)|†", re.IGNORECASE)
_TOWARD_CUES = {"to", "into", "в", "на"}  # "moved to Paris", but also "married to X": a place cue only for where
_PERSON_CUES = {"by", "with", "son", "daughter", "wife", "husband", "father", "mother", "married", "and"}


@dataclass
class Reading:
    answer: str
    evidence: list[Evidence] = field(default_factory=list)
    abstained: bool = False


@dataclass
class _Sentence:
    scene: Recalled
    index: int
    text: str
    words: list[str]  # lower-cased


def _stem(word: str) -> str:
    w = word.lower()
    if has_cyrillic(w):  # Russian inflects the ending, often within five letters («колею», «колея»)
        w = lemma(w)
    return w[:5] if len(w) > 5 else w


def _stems(words: list[str]) -> set[str]:
    return {_stem(w) for w in words}


def _expand(relation: list[str]) -> dict[str, set[str]]:
    """Each relation word -> the stems that count as its mention (the word and its synonyms)."""
    return {w: {_stem(w)} | {_stem(s) for s in RELATION_SYNONYMS.get(w, ())} for w in relation}


def _lower_words(text: str) -> list[str]:
    return re.findall(r"\w+(?:[-'’]\w+)*", text.lower())


def _echoed(text: str, name: str) -> bool:
    """Does `text` name `name` across scripts? Each long word of the name is in the text as written or sounds
    like a word the text writes in the other script (Пэнтерс ~ Panthers; not Гагарин ~ Gardin, nor a first
    name alone)."""
    parts = [w for w in _lower_words(name) if len(w) >= 4 and not w.isdigit()]
    if all(has_cyrillic(p) == (language_of(text) == "ru") for p in parts):
        return False  # all in the text's own script (or nothing long): the plain check decides
    held = set(_lower_words(text))
    keys = {_name_key(w) for w in held if len(w) >= 3}
    return bool(parts) and all(p in held or _name_key(p) in keys or any(
        abs(len(k) - len(_name_key(p))) <= 1 and SequenceMatcher(None, _name_key(p), k).ratio() >= ECHO_NAME
        for k in keys) for p in parts)


@cache
def _name_key(word: str) -> str:
    """A name's sound key with its vowels merged: transliterations differ most in vowels (Пэнтерс, Panthers)."""
    return re.sub(r"[aeiouy]+", "a", sound_key(word))


class AnswerReader:
    """Reads the field for a short answer; one per process (it keeps only sentence vectors between questions)."""

    name = "extractive"

    def __init__(self) -> None:
        self._vectors: dict[str, np.ndarray] = {}  # scene id -> its sentences' vectors

    def read(self, question: str, scenes: list[Recalled], graph=None, embedder=None) -> Reading:
        """The short answer and its evidence; `graph` (couplings) resolves names, `embedder` lets a sentence
        that paraphrases the question answer it when none shares its words."""
        form = form_of(question)
        if not scenes:
            return Reading(self._abstain_text(form), [], abstained=True)
        q_entities = self._question_entities(question, form)
        if graph is not None:  # memory knows multi-word names the capitalisation splits ("Gaby: A True Story")
            q_entities = list(dict.fromkeys(q_entities + [e for e in graph.query_entities(question)
                                                          if graph.df(e) or e in graph.title_index]))
        # the question's query vector, embedded at most once per reading (several paths below may need it)
        question_vector = cache(lambda: embedder.embed_one(question, role="query")) if embedder is not None else None
        # A question in one language over memory in another shares few words with it («Пэнтерс» echoes Panthers,
        # «Суперкубок» is translated): what it names may be held by meaning (its strongest scene stands out of
        # the store), unless it is a person's full name, which is transliterated and so would echo.
        crossed = language_of(scenes[0].text) not in (form.language, "other")
        held = not q_entities or graph is None or self._known(q_entities, scenes, graph)
        if not held and crossed and not self._full_name_unechoed(question, scenes):
            held = self._held_by_meaning(question, scenes, graph, question_vector, crossed)
        if not held:
            return self._abstain(form, scenes)
        sentences = {s.id: [_Sentence(s, n, text, _lower_words(text)) for n, text in
                            enumerate(split_clauses(s.text) or [s.text])] for s in scenes}
        hops, parent = self._chain(scenes, q_entities, graph)
        if form.kind == "choice" and form.options:
            reading = self._choose(form, scenes, sentences)
        elif form.kind == "yesno":
            reading = self._yes_no(form, scenes, sentences, hops)
        else:
            reading = self._extract(form, question, q_entities, scenes, sentences, hops, parent, embedder, graph,
                                    question_vector, crossed)
        return reading or self._abstain(form, scenes)

    # --- which scenes the chain reaches --------------------------------------------------
    @staticmethod
    def _question_entities(question: str, form: QuestionForm) -> list[str]:
        spans = [norm(s) for s in capitalised_spans(question)]
        spans += [norm(m) for m in re.findall(r"[\"“«]([^\"”»“]{2,80})[\"”»]", question)]
        spans += [norm(o) for o in form.options]
        first = norm(question.split()[0]) if question.split() else ""
        return [s for s in dict.fromkeys(spans) if s and s != first]

    @staticmethod
    def _known(entities: list[str], scenes: list[Recalled], graph) -> bool:
        """Does memory hold any question entity (as an entity, a title, or in the woken scenes' text)?"""
        texts = [norm(f"{s.title or ''} {s.text}") for s in scenes]
        names = [{norm(w) for span in capitalised_spans(f"{s.title or ''}. {s.text}") for w in span.split()}
                 for s in scenes]
        for e in entities:
            if graph.df(e) or e in graph.title_index:
                return True
            if any(re.search(r"\b" + re.escape(e) + r"\b", t) for t in texts):
                return True
            if any(_echoed(t, e) for t in texts):  # «Джош Норман» in a scene about Josh Norman
                return True
            # A long name one scene words differently ("the Normans' Count of Apulia and Calabria"): all but
            # one of its words are names in that scene, the head word among them.
            parts = [w for w in e.split() if len(w) > 2 and not is_stop(w)]
            if len(parts) > 2 and any(parts[-1] in held and sum(w not in held for w in parts) <= 1 for held in names):
                return True
        return False

    def _full_name_unechoed(self, question: str, scenes: list[Recalled]) -> bool:
        """Does the question name a person in full («Юрий Гагарин») that no woken scene writes?"""
        full = [norm(n) for n in capitalised_spans(question)
                if len(n.split()) >= 2 and all(w[:1].isupper() and w.isalpha() for w in n.split())]
        return any(not any(self._mentions(s, [n]) for s in scenes) for n in full)

    @staticmethod
    def _mentions(scene: Recalled, names: list[str]) -> bool:
        text = norm(f"{scene.title or ''} {scene.text}")
        # a name written in the other script («Пэнтерс» for the Panthers) is a mention too
        return any(re.search(r"\b" + re.escape(n) + r"\b", text) or _echoed(text, n) for n in names if n)

    def _chain(self, scenes: list[Recalled], q_entities: list[str], graph) -> tuple[dict[str, int], dict[str, tuple]]:
        """Hop number of every reached scene, and for hop > 1 its parent and the bridge entity."""
        hops: dict[str, int] = {}
        parent: dict[str, tuple[str, str]] = {}
        titled = [s for s in scenes if s.title and any(a in q_entities for a in title_aliases(s.title))]
        mentioning = [s for s in scenes if s not in titled and self._mentions(s, q_entities)]
        if not titled and not mentioning:  # no named entity to hold on to: every woken scene is a first hop
            return {s.id: 1 for s in scenes}, {}
        names = {s.id: (title_aliases(s.title) if s.title else []) for s in scenes}
        entities = self._scene_entities(scenes, graph)
        # Scenes titled by a question entity are the first hop; a scene that only mentions one is a first
        # hop too unless a titled scene leads to it (then it is the next hop of that chain).
        for starts in (titled, mentioning):
            queue = deque(s.id for s in starts if s.id not in hops)
            hops.update({sid: 1 for sid in queue})
            while queue:
                sid = queue.popleft()
                if hops[sid] >= MAX_HOPS:
                    continue
                here = next(s for s in scenes if s.id == sid)
                for other in scenes:
                    if other.id in hops:
                        continue
                    bridge = next((a for a in names[other.id] if a and self._mentions(here, [a])), None)
                    if bridge is None and hops[sid] == 1:  # a shared rare entity bridges one hop only
                        shared = (entities.get(sid, set()) & entities.get(other.id, set())) - set(q_entities)
                        bridge = min(shared, key=lambda e: (graph.df(e), e)) if shared else None
                    if bridge:
                        hops[other.id] = hops[sid] + 1
                        parent[other.id] = (sid, bridge)
                        queue.append(other.id)
        return hops, parent

    @staticmethod
    def _scene_entities(scenes: list[Recalled], graph) -> dict[str, set[str]]:
        """Rare entities of each scene (held by 2..50 scenes), from the coupling graph."""
        if graph is None:
            return {}
        out = {}
        for s in scenes:
            pos = graph.position.get(s.id)
            if pos is not None:
                out[s.id] = {e for e in graph.entities_of(pos) if 1 < graph.df(e) <= 50 and not e.isdigit()}
        return out

    # --- open questions: who / where / when / how many / what ----------------------------
    def _extract(self, form: QuestionForm, question: str, q_entities: list[str], scenes: list[Recalled],
                 sentences: dict[str, list[_Sentence]], hops: dict[str, int], parent: dict,
                 embedder=None, graph=None, question_vector=None, crossed: bool = False) -> Reading | None:
        ask = _Asked(form, question, q_entities)
        ask.bridges = {a for s in scenes if hops.get(s.id, 0) > 1 and s.title for a in title_aliases(s.title)}
        ask.hops = hops
        if crossed:
            ask.cross(q_entities)
        anchorless = not any(h > 1 for h in hops.values()) and not any(
            self._mentions(s, q_entities) or (s.title and set(title_aliases(s.title)) & set(q_entities))
            for s in scenes) and not self._held_by_meaning(question, scenes, graph, question_vector, crossed)
        strength = _strengths(scenes)
        reached = [sent for s in scenes if s.id in hops for sent in sentences[s.id]]
        named, naming = ask.naming_sentences(reached) if not ask.nested else (set(), set())
        best: tuple[float, Span, _Sentence] | None = None
        if crossed:  # no relation word can be shared across languages: only a sentence close in meaning answers
            if embedder is None or anchorless or not reached:
                return None
            mean, sd = graph.dense_moments(question_vector()) if graph is not None else (PARAPHRASE_MIN, 0.0)
            best = self._paraphrase(ask, reached, strength, embedder, question_vector(), mean + CROSSED_Z * sd)
            reached = []
        for sent in reached:
            fit, hits = ask.fit(sent)
            if ask.relation and not fit:
                continue  # a sentence that shares no relation word with the question does not answer it
            if anchorless and fit < 0.5:
                continue  # nothing the question names is in memory: only a close paraphrase may answer
            found = ask.best_span(sent, fit, hits, strength[sent.scene.id])
            if found and sent.scene.id in naming and id(sent) not in named:
                found = (found[0] - NAMING_PENALTY, found[1])
            if found and (best is None or found[0] > best[0]):
                best = (found[0], found[1], sent)
        if (best is None or best[0] < MIN_SCORE) and embedder is not None and reached and not anchorless:
            best = self._paraphrase(ask, reached, strength, embedder, question_vector())
        if best is None or best[0] < MIN_SCORE:
            return None
        _, span, sent = best
        answer = _extend_place(span, sent.text) if form.kind == "place" else span.text
        chain = self._evidence_chain(sent, sentences, parent)
        if len(chain) == 1:
            chain = self._other_half(ask, sent, q_entities, scenes, sentences, hops) + chain
            chain = [e.model_copy(update={"hop": n + 1}) for n, e in enumerate(chain)]
        return Reading(answer.strip(" ,.;:"), chain)

    @staticmethod
    def _held_by_meaning(question: str, scenes: list[Recalled], graph, question_vector, crossed: bool = False) -> bool:
        """A question that names nothing may still be about a scene memory holds: its strongest scene stands
        far out of the store's cosine distribution (a z-score, so the bar does not depend on the embedder)."""
        if graph is None or question_vector is None or not scenes:
            return False
        # and it uses the store's own words: one the store never saw ("penicillin") means it asks about
        # something else, however close the strongest scene's topic (one in five may be a misspelling)
        # (across languages every word is unseen: there the z rule alone decides)
        terms = [t for t in terms_of(question) if len(t) > 3] if not crossed else []
        unseen = [t for t in terms if t not in graph.term_id or not graph.term_df[graph.term_id[t]]]
        if len(unseen) > len(terms) // 5:
            return False
        mean, sd = graph.dense_moments(question_vector())
        return (max(s.dense for s in scenes) - mean) / sd >= HELD_Z

    def _other_half(self, ask: "_Asked", answer: _Sentence, q_entities: list[str], scenes: list[Recalled],
                    sentences: dict[str, list[_Sentence]], hops: dict[str, int]) -> list[Evidence]:
        """When the answer's scene is a first hop, the question may also name something only another scene
        holds ("the film directed by X ..."): that scene's sentence naming it completes the evidence."""
        missing = [e for e in q_entities if not self._mentions(answer.scene, [e])]
        aliases = title_aliases(answer.scene.title) if answer.scene.title else []
        for entity in missing:
            holders = [s for s in scenes if s.id != answer.scene.id and hops.get(s.id) == 1
                       and (entity in (title_aliases(s.title) if s.title else []) or self._mentions(s, [entity]))]
            if not holders:
                continue

            def support(x: _Sentence) -> float:
                text = norm(x.text)
                names = any(re.search(r"\b" + re.escape(a) + r"\b", text) for a in aliases if a)
                return 2.0 * names + ask.fit(x)[0] + (entity in text)

            best = max((x for x in sentences[holders[0].id]), key=support)
            if support(best) > 0:
                return [Evidence(scene_id=best.scene.id, title=best.scene.title, text=best.text, hop=1,
                                 role="bridge")]
        return []

    def _paraphrase(self, ask: "_Asked", reached: list[_Sentence], strength: dict[str, float],
                    embedder, question_vector: np.ndarray,
                    floor: float = PARAPHRASE_MIN) -> tuple[float, Span, _Sentence] | None:
        """When no sentence shares the question's words, the one closest in meaning may still say the answer
        ("function problems can be recast as ..." for "How can function problems be restated?")."""
        vectors = self._sentence_vectors(reached, embedder)
        cosine = vectors @ question_vector
        order = np.argsort(-cosine)[:PARAPHRASE_SENTENCES]
        best = None
        for i in order:
            if cosine[i] < floor:
                break
            sent = reached[int(i)]
            fit, hits = ask.fit(sent)
            found = ask.best_span(sent, max(fit, float(cosine[i])), hits, strength[sent.scene.id])
            if found and (best is None or found[0] > best[0]):
                best = (found[0], found[1], sent)
        return best

    def _sentence_vectors(self, reached: list[_Sentence], embedder) -> np.ndarray:
        """Sentence vectors, embedded once per scene and process (scenes never change under an id)."""
        missing = list(dict.fromkeys(x.scene.id for x in reached if x.scene.id not in self._vectors))
        if missing:
            if len(self._vectors) > SENTENCE_CACHE:
                self._vectors.clear()
            texts = {sid: [x.text for x in reached if x.scene.id == sid] for sid in missing}
            flat = embedder.embed([t for ts in texts.values() for t in ts], role="passage")
            at = 0
            for sid, ts in texts.items():
                self._vectors[sid] = flat[at : at + len(ts)]
                at += len(ts)
        return np.stack([self._vectors[x.scene.id][x.index] for x in reached])

    def _evidence_chain(self, answer: _Sentence, sentences: dict[str, list[_Sentence]],
                        parent: dict) -> list[Evidence]:
        """The answer sentence preceded by, for each hop back, the parent's sentence naming the bridge."""
        chain = [answer]
        sid = answer.scene.id
        while sid in parent and len(chain) < MAX_HOPS:
            up, bridge = parent[sid]
            sents = sentences[up]
            pick = next((x for x in sents if re.search(r"\b" + re.escape(bridge) + r"\b", norm(x.text))), sents[0])
            chain.insert(0, pick)
            sid = up
        return [Evidence(scene_id=x.scene.id, title=x.scene.title, text=x.text, hop=n + 1,
                         role="answer" if x is answer else "bridge") for n, x in enumerate(chain)]

    # --- comparisons ---------------------------------------------------------------------
    def _option_scenes(self, option: str, scenes: list[Recalled]) -> list[Recalled]:
        """The scene an option names (titled by it first, else mentioning it), then the scenes it bridges to."""
        key = norm(option)
        titled = [s for s in scenes if s.title and key in title_aliases(s.title)]
        named = titled or [s for s in scenes if self._mentions(s, [key])]
        if not named:
            return []
        head = named[0]
        out = [head]
        for s in scenes:
            if s is head or not s.title:
                continue
            if any(a and self._mentions(head, [a]) for a in title_aliases(s.title)):
                out.append(s)
        return out

    def _attribute(self, form: QuestionForm, chain: list[Recalled],
                   sentences: dict[str, list[_Sentence]]) -> tuple[object, _Sentence] | None:
        """The compared attribute's value for one item, with the sentence that states it."""
        relation = _expand([w for w in form.relation if w not in _lower_words(" ".join(form.options))])
        events = _expand(form.focus)
        life_event = bool(set(events) & {"born", "died", "родил", "умер"})
        best = None
        for depth, scene in enumerate(chain):
            for sent in sentences[scene.id]:
                stems = {_stem(w) for w in sent.words}
                matched = sum(1 for alts in relation.values() if alts & stems)
                # The dated event ("born", "died") decides whose date it is: the film's or its director's.
                dated = sum(1 for alts in events.values() if alts & stems) + (
                    0.8 if life_event and _life_span(sent.text) else 0.0)
                value = _value_in(form, sent.text, events)
                if value is None or (life_event and not dated):
                    continue  # a birth or a death is stated by its words or a life span, not by any date
                score = 3.0 * dated + matched - 0.1 * sent.index - 0.3 * depth
                if best is None or score > best[0]:
                    best = (score, value, sent)
        return (best[1], best[2]) if best else None

    def _choose(self, form: QuestionForm, scenes: list[Recalled], sentences: dict) -> Reading | None:
        found = []
        for option in form.options:
            chain = self._option_scenes(option, scenes)
            got = self._attribute(form, chain, sentences) if chain else None
            found.append((option, chain, got))
        evidence = []
        for _, chain, got in found:
            if not got:
                continue
            if got[1].scene.id != chain[0].id and got[1].scene.title:  # the item's own scene names the next hop
                alias = title_aliases(got[1].scene.title)
                bridge = next((x for x in sentences[chain[0].id] if any(
                    re.search(r"\b" + re.escape(a) + r"\b", norm(x.text)) for a in alias if a)), None)
                if bridge is not None:
                    evidence.append(Evidence(scene_id=chain[0].id, title=chain[0].title, text=bridge.text,
                                             hop=len(evidence) + 1, role="bridge"))
            evidence.append(Evidence(scene_id=got[1].scene.id, title=got[1].scene.title, text=got[1].text,
                                     hop=len(evidence) + 1, role="option"))
        valued = [(o, c, g) for o, c, g in found if g]
        if len(valued) >= 2 and form.order in ("min", "max"):
            pick = (min if form.order == "min" else max)(valued, key=lambda x: _sortable(x[2][0]))
            return Reading(_as_named(pick[0], pick[1]), evidence)
        if len(valued) == 1 and form.order == "min" and set(form.focus) & {"died", "умер"}:
            return Reading(_as_named(valued[0][0], valued[0][1]), evidence)  # the others have no death: alive
        if form.attribute not in ("date", "number"):
            return self._choose_by_words(form, found, sentences)
        present = [(o, c) for o, c, _ in found if c]
        if not present:
            return None
        # The attribute is missing for an item: the item whose scene resonates more is the better guess.
        option, chain = max(present, key=lambda x: x[1][0].score)
        return Reading(_as_named(option, chain), evidence or [
            Evidence(scene_id=c[0].id, title=c[0].title, text=sentences[c[0].id][0].text, hop=n + 1, role="option")
            for n, (_, c) in enumerate(present)])

    def _choose_by_words(self, form: QuestionForm, found: list, sentences: dict) -> Reading | None:
        """"Which singer is American, A or B?": the item whose scene carries the asked-about words."""
        asked = _expand([w for w in form.relation if w not in _lower_words(" ".join(form.options))])
        scored = []
        for option, chain, _ in found:
            if not chain:
                continue
            best = max(sentences[chain[0].id][:3], key=lambda x: sum(1 for a in asked.values() if a & _stems(x.words)))
            scored.append((sum(1 for a in asked.values() if a & _stems(best.words)), chain[0].score, option, chain, best))
        if not scored:
            return None
        _, _, option, chain, best = max(scored, key=lambda x: (x[0], x[1]))
        return Reading(_as_named(option, chain), [Evidence(scene_id=x[4].scene.id, title=x[4].scene.title,
                                                           text=x[4].text, hop=n + 1, role="option")
                                                  for n, x in enumerate(scored)])

    def _yes_no(self, form: QuestionForm, scenes: list[Recalled], sentences: dict, hops: dict) -> Reading | None:
        lang = "ru" if form.language == "ru" else "en"
        items = [(o, self._option_scenes(o, scenes)) for o in form.options]
        items = [(o, c) for o, c in items if c]
        if len(items) >= 2 and form.order == "same":
            values = []
            evidence = []
            for n, (option, chain) in enumerate(items):
                traits, sent = _traits(chain, sentences, option)
                values.append(traits)
                if sent:
                    evidence.append(Evidence(scene_id=sent.scene.id, title=sent.scene.title, text=sent.text,
                                             hop=n + 1, role="option"))
            same = bool(values[0] and all(values[0] & v for v in values[1:]))
            return Reading(YES[lang] if same else NO[lang], evidence)
        # "Are A and B both film directors?" / "Is A a B?": do the items' scenes carry the asked-about words?
        asked = _expand([w for w in form.relation if w not in _lower_words(" ".join(form.options))])
        chains = [c for _, c in items] or [[s] for s in scenes[:1] if s.id in hops]
        if not chains or not asked:
            return None
        evidence, verdicts = [], []
        for n, chain in enumerate(chains):
            title = _stems(_lower_words(chain[0].title or ""))  # "Medici (board game)" says what it is

            def carried_by(x: _Sentence) -> int:
                return sum(1 for alts in asked.values() if alts & (_stems(x.words) | title))

            best = max((x for s in chain[:1] for x in sentences[s.id]), key=carried_by)
            carried = carried_by(best)
            verdicts.append(carried / len(asked) >= 0.5)
            evidence.append(Evidence(scene_id=best.scene.id, title=best.scene.title, text=best.text, hop=n + 1,
                                     role="option"))
        return Reading(YES[lang] if all(verdicts) else NO[lang], evidence)

    # --- not knowing ---------------------------------------------------------------------
    @staticmethod
    def _abstain_text(form: QuestionForm) -> str:
        return ABSTAIN_RU if form.language == "ru" else ABSTAIN_EN

    def _abstain(self, form: QuestionForm, scenes: list[Recalled]) -> Reading:
        closest = [Evidence(scene_id=s.id, title=s.title, text=(split_clauses(s.text) or [s.text])[0], hop=n + 1,
                            role="closest") for n, s in enumerate(scenes[:CLOSEST])]
        return Reading(self._abstain_text(form), closest, abstained=True)


class _Asked:
    """What one question looks for, ready to score sentences and their spans."""

    def __init__(self, form: QuestionForm, question: str, q_entities: list[str]):
        self.form, self.question = form, question
        self.relation = _expand([w for w in form.relation if not any(w in e.split() for e in q_entities)])
        self.focus = set(form.focus) & set(self.relation)
        self.anchors = {_stem(w) for e in q_entities for w in e.split() if len(w) > 2}
        self.q_norm = norm(question)
        self.q_stems = _stems(_lower_words(question))
        self.nationality = bool({"nationality", "национальность", "гражданство"} & set(form.relation))
        self.lifetime = _lifetime(form)
        self.bridges: set[str] = set()  # names of scenes the chain reaches past the first hop
        self.hops: dict[str, int] = {}
        self.echoes: dict[str, str] = {}  # across scripts: sound key of a question word -> its stem
        self._echoed: dict[str, str] = {}
        # "X's father", "the director of X": the question walks a relation away from what it names, so the
        # answer lies a hop further than the named scene.
        walked = re.findall(r"(?:'s|’s)\s+([a-z][\w-]*)|\bthe\s+([a-z][\w-]*)\s+of\b", question)
        self.nested = any(w and w not in form.focus for pair in walked for w in pair)

    def cross(self, q_entities: list[str]) -> None:
        """The question is in another language than memory: a sentence word echoes a question word when both
        sound alike once transliterated (names: Пэнтерс ~ Panthers; loan words: квотербек ~ quarterback)."""
        words = [w for w in _lower_words(self.question) + [w for e in q_entities for w in e.split()]
                 if len(w) >= 4 and not is_stop(w) and not w.isdigit()]
        self.echoes = {sound_key(w): _stem(w) for w in words}

    def stems_of(self, words: list[str]) -> list[str]:
        """Stems of a sentence's words; across scripts, a word that echoes a question word takes its stem."""
        if not self.echoes:
            return [_stem(w) for w in words]
        return [self._echo(w) for w in words]

    def _echo(self, word: str) -> str:
        if word not in self._echoed:
            stem = _stem(word)
            if len(word) >= 4 and not word.isdigit() and has_cyrillic(word) != (self.form.language == "ru"):
                key = sound_key(word)
                close = [(SequenceMatcher(None, key, k).ratio(), s) for k, s in self.echoes.items()
                         if k[:1] == key[:1] and 0.6 * len(k) <= len(key) <= 1.6 * len(k)]
                good = max(close, default=(0.0, ""))
                stem = good[1] if good[0] >= ECHO_MIN else stem
            self._echoed[word] = stem
        return self._echoed[word]

    def naming_sentences(self, reached: list[_Sentence]) -> tuple[set[int], set[str]]:
        """In each scene, the sentences (ids) that name most of what the question names, and the scenes where
        any does: within one scene, the sentence about the question's subject ("In 1891 James Dewar ...")
        answers it rather than its neighbour about something else ("... Linde and Hampson in 1895")."""
        if not self.anchors:
            return set(), set()
        share: dict[int, float] = {}
        for sent in reached:
            stems = set(self.stems_of(sent.words))
            share[id(sent)] = len(self.anchors & stems) / len(self.anchors)
        top: dict[str, float] = {}
        for sent in reached:
            top[sent.scene.id] = max(top.get(sent.scene.id, 0.0), share[id(sent)])
        named = {id(sent) for sent in reached if share[id(sent)] > 0 and share[id(sent)] == top[sent.scene.id]}
        return named, {sid for sid, t in top.items() if t > 0}

    def fit(self, sent: _Sentence) -> tuple[float, list[int]]:
        """Share of the relation words the sentence carries (the answer's own relation counts double), and
        the word positions to measure a span's distance from: focus words, else relation words, else names."""
        stems = self.stems_of(sent.words)
        present = set(stems)
        matched = sum(2.0 if w in self.focus else 1.0 for w, alts in self.relation.items() if alts & present)
        focus_hits = [n for n, st in enumerate(stems)
                      if any(st in alts for w, alts in self.relation.items() if w in self.focus)]
        hits = [n for n, st in enumerate(stems) if any(st in alts for alts in self.relation.values())]
        life = _life_span(sent.text) if self.lifetime else None
        if life:  # "(May 10, 1890 – August 17, 1987)" states a birth and a death without the words
            focus_hits.append(len(re.findall(r"\w+(?:[-'’]\w+)*", sent.text[: life[0]])))
            matched += 2.0
        fit = matched / max(len(self.relation) + len(self.focus), 1)
        anchors = [n for n, st in enumerate(stems) if st in self.anchors]
        return fit, focus_hits or hits or anchors

    def best_span(self, sent: _Sentence, fit: float, hits: list[int], strength: float) -> tuple[float, Span] | None:
        kind, best = self.form.kind, None
        focused = any(alts & set(self.stems_of(sent.words)) for w, alts in self.relation.items() if w in self.focus)
        subject = set(_lower_words(re.sub(r"\(.*?\)", " ", sent.scene.title or "")))
        life = _life_span(sent.text) if self.lifetime else None
        spans = spans_of(sent.text)
        for span in spans:
            if _in_question(span.text, self.q_norm, self.q_stems, self.stems_of):
                continue
            typed = _type_fit(kind, span, sent.text, self.nationality)
            if typed <= -1:
                continue
            if life and span.kind == "date" and life[0] <= span.char < life[1]:
                inside = [x for x in spans if x.kind == "date" and life[0] <= x.char < life[1]]
                # One date in the parenthesis is a birth, unless it says "died" ("(died 12 June 1516)").
                only_death = len(inside) == 1 and bool(_DEATH_MARK.search(sent.text[life[0] : life[1]]))
                wanted = inside[-1] if self.lifetime == "died" else inside[0]
                fits = (self.lifetime == "died") == only_death or len(inside) > 1
                typed += 0.6 if span.char == wanted.char and fits else -0.6
            if subject and _lower_words(span.text) and set(_lower_words(span.text)) <= subject:
                typed -= 0.8  # a scene's own subject is what the sentence says something about
            span_words = _lower_words(span.text)
            if span_words:  # "Far Eastern collections include": what the question already says is not the answer
                typed -= OVERLAP_PENALTY * sum(st in self.q_stems for st in self.stems_of(span_words)) / len(span_words)
            if self.focus and not focused and norm(span.text) in self.bridges:
                typed -= 0.6  # it names the next hop, and the answer's relation lies further along the chain
            near = min((abs(h - span.start) if h < span.start else abs(span.end - 1 - h) for h in hits), default=None)
            proximity = 1.0 / (1.0 + near / 4.0) if near is not None else 0.0
            deeper = NESTED_HOP_BONUS * (min(self.hops.get(sent.scene.id, 1), 2) - 1) if self.nested else 0.0
            score = 1.5 * fit + typed + 0.8 * proximity + 0.4 * strength - 0.05 * sent.index + deeper
            if best is None or score > best[0]:
                best = (score, span)
        return best


def _strengths(scenes: list[Recalled]) -> dict[str, float]:
    low, high = min(s.score for s in scenes), max(s.score for s in scenes)
    return {s.id: (s.score - low) / (high - low) if high > low else 1.0 for s in scenes}


def _in_question(span: str, q_norm: str, q_stems: set[str], stems_of=None) -> bool:
    """A span the question already holds is not an answer to it."""
    key = norm(span)
    if not key:
        return True
    if re.search(r"\b" + re.escape(key) + r"\b", q_norm):
        return True
    words = _lower_words(span)
    return bool(words) and all(st in q_stems for st in (stems_of(words) if stems_of else map(_stem, words)))


# Head words that make a capitalised name an institution, a work, an event or a place rather than a person.
_THING_HEADS = {"festival", "award", "awards", "prize", "university", "college", "school", "academy", "institute",
                "church", "cathedral", "company", "corporation", "inc", "ltd", "records", "studios", "pictures",
                "film", "films", "league", "club", "association", "society", "party", "army", "navy", "war", "battle",
                "river", "lake", "mountain", "mountains", "island", "islands", "street", "road", "bridge", "station",
                "airport", "park", "museum", "hospital", "theatre", "theater", "hall", "house", "palace", "castle",
                "county", "city", "state", "province", "district", "kingdom", "empire", "republic", "dynasty",
                "series", "show", "album", "song", "novel", "magazine", "newspaper", "network", "channel", "team",
                "championship", "cup", "games", "olympics", "council", "parliament", "court", "committee", "order",
                "университет", "институт", "школа", "академия", "премия", "фестиваль", "компания", "партия",
                "река", "озеро", "улица", "город", "область", "империя", "война"}
_DEMONYM = re.compile(r"^[A-ZА-ЯЁ][a-zа-яё]+(?:an|ian|ese|ish|ch|ic|i|ский|ская|ское|цы|ец)$")


def _is_demonym(span: Span, sentence: str) -> bool:
    """'American' in 'an American filmmaker': one capitalised word with a demonym ending before a lower-case word."""
    after = sentence[span.char + len(span.text):].split()[:1]
    return (" " not in span.text and bool(_DEMONYM.match(span.text))
            and bool(after) and after[0][:1].islower())


def _type_fit(kind: str, span: Span, sentence: str, nationality: bool = False) -> float:
    """How well a span fits the expected answer type: -1 rules it out, up to +1."""
    before = sentence[: span.char].split()[-1:] if span.char else []
    cue = before[0].lower().strip("(,") if before else ""
    if span.kind == "name" and _is_demonym(span, sentence):
        return 1.0 if nationality else (-0.8 if kind in ("place", "person") else -0.2)
    if kind == "date":
        return 1.0 if span.kind == "date" else -1.0
    if kind == "number":
        if span.kind == "number":
            return 1.0
        return 0.2 if span.kind == "date" and not re.fullmatch(r"\d{4}", span.text) else -1.0
    if span.kind in ("date", "number"):
        return -1.0 if kind in ("person", "place") else -0.3
    if kind == "place":
        if span.kind != "name":
            return -1.0
        return 1.0 if cue in _PLACE_CUES or cue in _TOWARD_CUES else 0.3
    if kind == "person":
        if span.kind != "name":
            return -1.0
        if span.text.split()[-1].lower() in _THING_HEADS or re.fullmatch(r"[A-ZА-ЯЁ]{1,4}", span.text):
            return 0.1  # "Berlin International Film Festival" or "TV" names an institution or a thing, not a person
        return 0.4 if cue in _PLACE_CUES else (1.0 if len(span.text.split()) >= 2 or cue in _PERSON_CUES else 0.7)
    return 0.6 if span.kind == "name" else 0.2  # "what"/"which": a name first, a phrase when no name fits


def _extend_place(span: Span, sentence: str) -> str:
    """'Brooklyn' followed by ', New York' is 'Brooklyn, New York'."""
    rest = sentence[span.char + len(span.text):]
    m = re.match(r",\s+([A-ZА-ЯЁ][\w'’-]*(?:\s+[A-ZА-ЯЁ][\w'’-]*){0,2})", rest)
    return f"{span.text}, {m.group(1)}" if m else span.text


def _value_in(form: QuestionForm, sentence: str, relation: dict[str, set[str]]):
    """The compared attribute as it appears in one sentence (a date or a number), or None."""
    spans = spans_of(sentence)
    if form.attribute == "number":
        numbers = [s.value for s in spans if s.kind == "number" and isinstance(s.value, float)]
        return numbers[0] if numbers else None
    dates = [s for s in spans if s.kind == "date" and s.value]
    if not dates:
        return None
    death = bool({"died", "умер"} & set(relation))
    life = _life_span(sentence)
    if life:  # "(1 May 1900 – 2 June 1980)": birth first, death second
        inside = [s for s in dates if life[0] <= s.char < life[1]]
        if inside:
            return inside[-1].value if death and len(inside) >= 2 else (None if death else inside[0].value)
    return dates[0].value


def _lifetime(form: QuestionForm) -> str:
    """'born' or 'died' when a date question asks for a birth or a death, else ''."""
    if form.kind != "date":
        return ""
    stems = {_stem(w) for w in form.focus or form.relation}
    if stems & {"born", "birth", "родил", "рожде"}:
        return "born"
    if stems & {"died", "die", "death", "умер", "смерт"}:
        return "died"
    return ""


def _life_span(sentence: str) -> tuple[int, int] | None:
    """Character bounds of the first parenthesis that holds a date (a life span or a birth date)."""
    for m in re.finditer(r"\(([^()]{4,120})\)", sentence):
        if re.search(r"\b\d{3,4}\b", m.group(1)):
            return m.start(), m.end()
    return None


def _sortable(value) -> tuple:
    if isinstance(value, tuple):
        year, month, day = value
        return (year, month or 6, day or 15)
    return (float(value),)


def _as_named(option: str, chain: list[Recalled]) -> str:
    """The item as memory spells it (its scene's title without a disambiguating suffix), else as asked."""
    if chain and chain[0].title and norm(option) in title_aliases(chain[0].title):
        return re.sub(r"\s*\(.*?\)\s*$", "", chain[0].title).strip() or option
    return option


def _traits(chain: list[Recalled], sentences: dict[str, list[_Sentence]], option: str) -> tuple[set[str], _Sentence | None]:
    """Capitalised places and demonyms an item's first sentences name (its country, nationality ...)."""
    own = set(_lower_words(option))
    traits: set[str] = set()
    first = None
    for scene in chain[:2]:
        for sent in sentences[scene.id][:2]:
            found = {w.lower() for span in capitalised_spans(sent.text) for w in span.split()} - own
            found = {w for w in found if len(w) > 2}
            if found and first is None:
                first = sent
            traits |= found
    return traits, first
