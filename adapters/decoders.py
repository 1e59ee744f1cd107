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
        # Sentence fit to the field, nudged towards stronger scenes.
        scores = vectors @ field - 0.02 * np.array([rank[sid] for sid, _ in candidates])
        order = list(np.argsort(-scores))
        chosen: list[int] = []
        for i in order:  # one sentence per scene first: each hop gets its say
            if len(chosen) < self.sentences and candidates[i][0] not in {candidates[j][0] for j in chosen}:
                chosen.append(i)
        for i in order:
            if len(chosen) >= self.sentences:
                break
            if i not in chosen:
                chosen.append(i)
        chosen.sort(key=lambda i: (rank[candidates[i][0]], i))
        answer = " ".join(f"{candidates[i][1]} [{candidates[i][0]}]" for i in chosen)
        citations = list(dict.fromkeys(candidates[i][0] for i in chosen))
        return Decoded(answer, citations)


def load_decoder(spec: str, embedder: Embedder, sentences: int) -> ExtractiveDecoder:
    if spec == "extractive":
        return ExtractiveDecoder(embedder, sentences)
    raise SceneMindError(f"decoder {spec!r} is not available: use 'extractive'")
