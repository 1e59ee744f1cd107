"""A block of scenes added at once (a cold load) gives the graph `add` per scene gives.

Compared by scene id with the same checks as test_graph_changes (BM25, entity bonus, spreading,
IDF, lexical trust, query entities, each scene's entities), for a graph built by blocks only,
by blocks then single changes, by blocks on a graph with free positions (the per-scene fallback),
and for the index's own cold load and catch-up from SQLite.
"""

from __future__ import annotations

import numpy as np
import pytest

from adapters.coupling_index import CouplingGraph, CouplingIndex, SceneRow
from test_graph_changes import assert_same, built, rows  # noqa: F401  (rows is a fixture)


def key_rows(rows) -> list[tuple[str, str, int]]:
    """(id, key, count) as the index stores them, keys of a scene in key order (SQLite's primary key order)."""
    return [(sid, key, tf) for sid, _, keys in rows for key, tf in sorted(keys.items())]


def by_blocks(rows, size: int, g: CouplingGraph | None = None) -> CouplingGraph:
    g = g or CouplingGraph()
    for start in range(0, len(rows), size):
        block = rows[start : start + size]
        shuffled = key_rows(block)[::-1]  # a block's rows may come in any order: positions follow `scenes`
        g.add_block([(sid, title) for sid, title, _ in block], shuffled)
    return g.ready()


@pytest.mark.parametrize("size", [1, 17, 500])
def test_blocks_equal_adds(rows, size):
    g = by_blocks(rows, size)
    assert not g._pending and g._base_rows == len(rows) and not g._tail  # one base, nothing left over
    assert g.ids == [r[0] for r in rows]  # positions in the order given
    ref = built(rows)
    assert_same(g, ref)
    assert {t: g.term_df[i] for t, i in g.term_id.items()} == {t: ref.term_df[i] for t, i in ref.term_id.items()}
    assert sorted(zip(g.entity_names, g.entity_df)) == sorted(zip(ref.entity_names, ref.entity_df))
    assert g._total_length == pytest.approx(ref._total_length)


def test_changes_after_a_block(rows):
    """Adds and removals after a block (pending rows merged first), then another block on free positions."""
    g = by_blocks(rows[:70], 30)
    gone = [f"s{i}" for i in range(0, 70, 6)]
    for sid in gone:
        assert g.remove(sid)
    for row in rows[70:90]:
        g.add(*row)
    assert_same(g.ready(), built([r for r in rows[:90] if r[0] not in gone]))
    by_blocks(rows[90:], 13, g)  # free positions wait: the per-scene fallback
    assert_same(g, built([r for r in rows if r[0] not in gone]))
    by_blocks([r for r in rows if r[0] in gone], 5, g)  # the removed scenes come back
    assert_same(g, built(rows))


def test_a_held_scene_in_a_block_is_replaced(rows):
    g = by_blocks(rows[:40], 40)
    changed = (rows[5][0], rows[5][1], dict(list(rows[6][2].items())))  # s5 with s6's keys
    by_blocks([changed] + rows[40:60], 21, g)
    assert_same(g, built(rows[:5] + rows[6:60] + [changed]))


def test_cold_load_and_catch_up_from_the_index(tmp_path, rows):
    """CouplingIndex.graph() loads by blocks (forced small here) and catches up with later adds and removals."""
    import adapters.coupling_index as ci

    rng = np.random.default_rng(1)
    vec = {r[0]: v / np.linalg.norm(v) for r, v in zip(rows, rng.normal(size=(len(rows), 8)))}
    writer = CouplingIndex(tmp_path / "c.sqlite")
    writer.add(SceneRow(sid, title, keys, vec[sid]) for sid, title, keys in rows[:100])
    old, ci.LOAD_BLOCK = ci.LOAD_BLOCK, 23
    try:
        reader = CouplingIndex(tmp_path / "c.sqlite", writable=False)
        g = reader.graph()
        assert g.ids == [r[0] for r in rows[:100]] and g._base_rows == 100
        assert_same(g, built(rows[:100]))
        writer.journal_removal({sid: vec[sid] for sid in ("s3", "s50")})
        writer.remove(["s3", "s50"])
        writer.add(SceneRow(sid, title, keys, vec[sid]) for sid, title, keys in rows[100:])
        assert_same(reader.graph(), built([r for r in rows if r[0] not in ("s3", "s50")]))
    finally:
        ci.LOAD_BLOCK = old


def test_a_block_naming_a_scene_twice_is_refused(rows):
    with pytest.raises(ValueError, match="twice"):
        CouplingGraph().add_block([("a", None), ("a", None)], [])
