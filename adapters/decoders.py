"""Output decoders: text from the field. The extractive decoder needs no model.

It answers with the sentences of the woken scenes that best match the
question, at most one per scene first so a multi-hop answer shows each hop,
each followed by the id of the scene it came from.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from adapters.embedder import Embedder
from adapters.lexicon import split_clauses
from state.errors import SceneMindError
from state.models import Formula, Recalled

MMR_REDUNDANCY = 0.5
SCENE_WEIGHT = 0.5
CHAIN_BONUS = 0.2


@dataclass
class Decoded:
    answer: str
    citations: list[str]


class ExtractiveDecoder:
    name = "extractive"

    def __init__(self, embedder: Embedder, sentences: int = 3):
        self.embedder, self.sentences = embedder, sentences

    def decode(self, question: str, field: np.ndarray, scenes: list[Recalled], formulas: list[Formula]) -> Decoded:
        if not scenes:
            return Decoded("I found no scene in memory that resonates with this question.", [])
        candidates = [(s.id, sent) for s in scenes for sent in split_clauses(s.text)]
        vectors = self.embedder.embed([sent for _, sent in candidates])
        rank = {s.id: n for n, s in enumerate(scenes)}
        strength = {s.id: s.score for s in scenes}
        # The strongest formula is the linked path through the field: its scenes speak first.
        chain = set(formulas[0].chain) if formulas else set()
        fit = (vectors @ field
               + SCENE_WEIGHT * np.array([strength[sid] for sid, _ in candidates])
               + CHAIN_BONUS * np.array([sid in chain for sid, _ in candidates], dtype=np.float32))
        chosen: list[int] = []
        while len(chosen) < min(self.sentences, len(candidates)):
            # Maximal marginal relevance: a sentence that repeats a chosen one adds little,
            # and a scene already quoted yields to the next hop.
            redundancy = (vectors @ vectors[chosen].T).max(axis=1) if chosen else np.zeros(len(candidates))
            quoted = {candidates[j][0] for j in chosen}
            repeat = np.array([0.2 if sid in quoted else 0.0 for sid, _ in candidates])
            score = fit - MMR_REDUNDANCY * redundancy - repeat
            score[chosen] = -np.inf
            chosen.append(int(np.argmax(score)))
        chosen.sort(key=lambda i: (rank[candidates[i][0]], i))
        answer = " ".join(f"{candidates[i][1]} [{candidates[i][0]}]" for i in chosen)
        citations = list(dict.fromkeys(candidates[i][0] for i in chosen))
        return Decoded(answer, citations)


def load_decoder(spec: str, embedder: Embedder, sentences: int) -> ExtractiveDecoder:
    if spec == "extractive":
        return ExtractiveDecoder(embedder, sentences)
    raise SceneMindError(f"decoder {spec!r} is not available: use 'extractive'")
