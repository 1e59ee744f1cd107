"""The coupling graph changes in place: adds and removals give the graph a fresh build of the same scenes gives.

Compared by scene id (positions differ: a removed scene's position is reused), for every
query-time primitive resonance uses: BM25, the entity bonus, spreading, IDF, and the
lexical trust resonance derives from the term statistics. Both sides of the base/tail
split are covered (a tail never merged, and one merged after every change).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from adapters.coupling_index import CouplingGraph, CouplingIndex, SceneRow
from adapters.lexicon import scene_keys, terms_of
from nodes.resonate import lexical_trust
from scenemind_data import DEMO_SCENES

QUESTION = "Where was the director of the film Gaby: A True Story born, in Mexico City?"
ENTITIES = {"luis mandoki": 1.0, "mexico city": 0.6, "american": 0.3}


@pytest.fixture(scope="module")
def rows() -> list[tuple[str, str | None, dict[str, int]]]:
    recs = [json.loads(line) for line in DEMO_SCENES.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [(f"s{i}", r.get("title"), scene_keys(r["text"], r.get("title"))) for i, r in enumerate(recs[:120])]


def built(rows) -> CouplingGraph:
    g = CouplingGraph()
    for row in rows:
        g.add(*row)
    return g.ready()


def by_id(g: CouplingGraph, scores: np.ndarray) -> dict[str, float]:
    assert len(scores) == g.size
    return {sid: float(scores[pos]) for sid, pos in g.position.items()}


def assert_same(g: CouplingGraph, ref: CouplingGraph) -> None:
    assert g.n == ref.n and set(g.position) == set(ref.position)
    terms = terms_of(QUESTION)
    seeds = ["s3", "s10", "s40"]
    pairs = [
        (g.bm25(terms), ref.bm25(terms)),
        (g.entity_bonus(ENTITIES, 1.0, 0.5), ref.entity_bonus(ENTITIES, 1.0, 0.5)),
        (g.spread({g.position[s]: 1.0 for s in seeds if s in g.position}, ENTITIES, 0.3, 15),
         ref.spread({ref.position[s]: 1.0 for s in seeds if s in ref.position}, ENTITIES, 0.3, 15)),
    ]
    for mine, theirs in pairs:
        a, b = by_id(g, mine), by_id(ref, theirs)
        assert a == pytest.approx(b, abs=1e-12)
        assert not mine[[pos for pos, sid in enumerate(g.ids) if sid is None]].any()  # free positions score 0
    for entity in ENTITIES:
        assert g.df(entity) == ref.df(entity) and g.idf(entity) == pytest.approx(ref.idf(entity))
    assert lexical_trust(g, terms) == pytest.approx(lexical_trust(ref, terms))
    assert g.query_entities(QUESTION) == pytest.approx(ref.query_entities(QUESTION))
    for sid, pos in ref.position.items():
        assert sorted(g.entities_of(g.position[sid])) == sorted(ref.entities_of(pos))


@pytest.mark.parametrize("merge", ["never", "once", "always"])
def test_adds_and_removals_equal_a_fresh_build(rows, merge):
    """never: every row in the tail; once: removals zero rows of a merged base; always: merged at each query."""
    g = CouplingGraph()
    g.compact_min, g.compact_share = (10**9, 10.0) if merge == "never" else (0, 0.0)
    for row in rows[:80]:
        g.add(*row)
    g.ready()
    if merge == "once":
        g.compact_min, g.compact_share = 10**9, 10.0
    gone = {f"s{i}" for i in range(0, 80, 7)} | {"s1", "s2"}
    for sid in sorted(gone):
        assert g.remove(sid)
    assert not g.remove("s1")  # twice: nothing
    for row in rows[80:]:  # reuse the free positions
        g.add(*row)
    g.ready()
    assert g.size < len(rows)
    assert_same(g, built([r for r in rows if r[0] not in gone]))
    for row in rows:  # the removed scenes come back
        if row[0] in gone:
            g.add(*row)
    assert_same(g.ready(), built(rows))


def test_a_removed_entity_is_unknown_again(rows):
    g = built(rows[:3])
    only = [e for e in g.entities_of(0) if g.df(e) == 1][0]
    g.remove(rows[0][0])
    question = f"Tell me about {only.title()} and the {only} here"
    assert g.df(only) == 0 and g.query_entities(question) == built(rows[1:3]).query_entities(question)
    assert not g.holders_of(only).size


def test_another_process_catches_up_with_removals(tmp_path, rows):
    """Two connections to one index file (as two processes): the reader's graph follows adds and removals."""
    rng = np.random.default_rng(0)
    vectors = {sid: v / np.linalg.norm(v) for sid, v in zip((r[0] for r in rows), rng.normal(size=(len(rows), 8)))}
    writer = CouplingIndex(tmp_path / "c.sqlite")
    writer.add(SceneRow(sid, title, keys, vectors[sid]) for sid, title, keys in rows[:60])
    reader = CouplingIndex(tmp_path / "c.sqlite", writable=False)
    assert reader.graph().n == 60
    gone = [f"s{i}" for i in range(0, 60, 5)]
    writer.journal_removal({sid: vectors[sid] for sid in gone})
    assert writer.pending_removals() == sorted(gone)
    assert writer.remove(gone) == len(gone) and not writer.pending_removals()
    writer.add(SceneRow(sid, title, keys, vectors[sid]) for sid, title, keys in rows[60:] + rows[:1])  # s0 again
    g = reader.graph()
    left = [r for r in rows if r[0] not in set(gone) - {"s0"}]
    assert_same(g, built(left))
    assert set(gone) - {"s0"} <= reader.forgotten and "s0" not in reader.forgotten
    # the moments lost exactly the removed vectors
    held = np.stack([vectors[r[0]] for r in left]).astype(np.float64)
    q = held[3]
    mean, std = g.dense_moments(q)
    assert mean == pytest.approx(float((held @ q).mean())) and std == pytest.approx(float((held @ q).std()))
    # a reader that becomes a writer (an ingest in a process that asked first) keeps its graph: no cold rebuild
    reader.make_writable()
    assert reader.graph() is g and g.n == len(left)
    # removing what is gone already changes nothing (a rerun after a kill)
    writer.journal_removal({gone[1]: vectors[gone[1]]})
    assert writer.remove([gone[1]]) == 0
    assert reader.graph().dense_moments(q) == pytest.approx((mean, std))
