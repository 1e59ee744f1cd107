"""Local spreading equals the dense walk with no floor, and a floor only drops what is worth less than it."""

import json

import numpy as np
import pytest
import scipy.sparse as sp

from adapters.coupling_index import CouplingGraph
from adapters.coupling_spread import Couplings, local_spread
from adapters.lexicon import scene_keys
from scenemind_data import DEMO_SCENES


def random_couplings(n: int = 400, m: int = 150, seed: int = 0):
    rng = np.random.default_rng(seed)
    rows = np.repeat(np.arange(n), rng.integers(0, 6, size=n))
    cols = rng.zipf(1.6, size=len(rows)) % m  # a few hub entities, many rare ones
    b = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, m))
    b.data[:] = 1.0  # duplicates summed: one coupling each
    df = np.asarray(b.sum(0)).ravel()
    idf = np.log(n / np.maximum(df, 1))
    mass = b @ idf
    g = Couplings(rows=(b.indptr, b.indices, b.data), cols=(b.tocsc().indptr, b.tocsc().indices, b.tocsc().data),
                  scene_out=1 / np.maximum(mass, 1e-12), entity_in=idf, entity_out=1 / np.maximum(df, 1),
                  scenes=n, entities=m)
    return b, g, idf, df, mass


def dense_walk(b, idf, df, mass, ps, pe, restart, iterations):
    total = ps.sum() + pe.sum()
    ps, pe = ps / total, pe / total
    xs, xe = ps.copy(), pe.copy()
    for _ in range(iterations):
        xs, xe = ((1 - restart) * (b @ (xe / np.maximum(df, 1))) + restart * ps,
                  (1 - restart) * idf * (b.T @ (xs / np.maximum(mass, 1e-12))) + restart * pe)
    return xs


def test_no_floor_is_the_dense_walk_and_a_floor_drops_only_small_activation():
    b, g, idf, df, mass = random_couplings()
    n, m = b.shape
    ps, pe = np.zeros(n), np.zeros(m)
    ps[[3, 17, 40]] = [1.0, 0.5, 0.25]
    pe[[0, 7]] = [0.8, 0.3]  # entity 0 is the largest hub
    want = dense_walk(b, idf, df, mass, ps, pe, 0.3, 15)
    seeds = (np.array([3, 17, 40]), np.array([1.0, 0.5, 0.25]))
    ents = (np.array([0, 7]), np.array([0.8, 0.3]))
    pos, act = local_spread(g, seeds, ents, 0.3, 15)
    got = np.zeros(n)
    got[pos] = act
    assert np.allclose(got, want, atol=1e-12) and (want > 0).sum() > 50  # the walk reached far
    floor = 0.2 / n
    pos, act = local_spread(g, seeds, ents, 0.3, 15, floor=floor)
    pruned = np.zeros(n)
    pruned[pos] = act
    assert len(pos) < (want > 0).sum() and act.min() >= floor
    # what is kept is close to the exact walk; what was dropped was worth little
    assert np.abs(pruned - want)[pos].max() < 0.5 * want[pos].max()
    strong = want >= 5 * floor
    assert np.all(pruned[strong] > 0)
    assert set(np.argsort(-want)[:10]) == set(np.argsort(-pruned)[:10])


def test_couplings_outside_the_matrices_spread_like_the_rest():
    b, g, idf, df, mass = random_couplings(seed=1)
    n, m = b.shape
    # scenes 300.. and entities 120.. arrived after the matrices were built: they live in the tail
    late = b[300:].tocoo()
    base = b[:300, :120].tocsr()
    tail_s, tail_e = late.row + 300, late.col
    early = b[:300, 120:].tocoo()
    tail_s, tail_e = np.concatenate([tail_s, early.row]), np.concatenate([tail_e, early.col + 120])
    split = Couplings(rows=(base.indptr, base.indices, base.data), cols=(base.tocsc().indptr, base.tocsc().indices,
                      base.tocsc().data), scene_out=g.scene_out, entity_in=idf, entity_out=g.entity_out,
                      scenes=n, entities=m, tail=(tail_s.astype(np.int64), tail_e.astype(np.int64)))
    seeds, ents = (np.array([5, 310]), np.array([1.0, 0.7])), (np.array([2, 130]), np.array([0.5, 0.5]))
    pos, act = local_spread(g, seeds, ents, 0.3, 15)
    pos2, act2 = local_spread(split, seeds, ents, 0.3, 15)
    assert np.array_equal(pos, pos2) and np.allclose(act, act2, atol=1e-12)


@pytest.mark.parametrize("merge", ["never", "once"])
def test_the_graphs_near_spread_is_its_dense_spread(merge):
    """On the coupling graph itself (base matrices, a tail of changed rows, removed rows zeroed), floor 0."""
    recs = [json.loads(line) for line in DEMO_SCENES.read_text(encoding="utf-8").splitlines() if line.strip()]
    g = CouplingGraph()
    g.compact_min, g.compact_share = (10**9, 10.0) if merge == "never" else (0, 0.0)
    for i, r in enumerate(recs[:150]):
        g.add(f"s{i}", r.get("title"), scene_keys(r["text"], r.get("title")))
    g.ready()
    g.compact_min, g.compact_share = 10**9, 10.0
    for i in range(0, 150, 9):
        g.remove(f"s{i}")
    for i, r in enumerate(recs[150:200], 150):
        g.add(f"s{i}", r.get("title"), scene_keys(r["text"], r.get("title")))
    g.ready()
    seeds = {g.position[s]: w for s, w in (("s3", 1.0), ("s10", 0.6), ("s170", 0.4))}
    entities = {"luis mandoki": 1.0, "mexico city": 0.6, "american": 0.3}
    dense = g.spread(seeds, entities, 0.3, 15)
    where, activation = g.spread_near(seeds, entities, 0.3, 15)
    near = np.zeros(g.size)
    near[where] = activation
    assert np.allclose(near, dense, atol=1e-13) and (dense > 0).sum() > 20
    # a floor keeps the scenes well above the uniform level (the seeds and their close neighbours), drops the rest
    where, activation = g.spread_near(seeds, entities, 0.3, 15, floor=0.2 / g.n)
    assert 0 < len(where) < (dense > 0).sum() / 4
    assert set(np.argsort(-dense)[:5]) == set(where[np.argsort(-activation)[:5]])
    assert np.allclose(activation[np.argsort(-activation)[:5]], np.sort(dense)[::-1][:5], rtol=0.1)
