"""Spreading activation that touches only the neighbourhood of its seeds.

Personalised PageRank over the scene <-> entity couplings, run as the same fixed number of
synchronous steps as the dense version, but on sparse vectors: each step reads only the
rows of the scenes and the columns of the entities that hold activation, and activation
under `floor` is dropped after each step. With floor 0 the result is the dense one (to
float rounding); a floor of c / n (n scenes) changes no kept score by more than what c / n
activation is worth, while a million-scene memory is no longer walked in full on every
probe. The graph's own representation stays the caller's: it hands in a CSR of scene rows
and a CSC of entity columns over the same 0/1 couplings, and the per-node scales.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

@dataclass
class Couplings:
    """The walk's graph. `rows` (indptr, indices, data): scene -> its entities; `cols`: entity -> its scenes;
    data 1.0 per coupling (0.0 for a removed one). A step scene -> entity multiplies by `scene_out` per
    scene and `entity_in` per entity; entity -> scene by `entity_out` per entity."""

    rows: tuple[np.ndarray, np.ndarray, np.ndarray]
    cols: tuple[np.ndarray, np.ndarray, np.ndarray]
    scene_out: np.ndarray
    entity_in: np.ndarray
    entity_out: np.ndarray
    scenes: int
    entities: int
    tail: tuple[np.ndarray, np.ndarray] | None = None  # couplings outside the matrices: (scene, entity) pairs


class Accumulator:
    """Sums of (index, value) pairs in time proportional to the pairs, not to the index space: a zeroed
    scratch array (cleared again after each use) and a stamp array that picks each index once."""

    def __init__(self, size: int):
        self.sums = np.zeros(size)
        self.stamp = np.zeros(size, dtype=np.int64)

    def __call__(self, *parts: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        idx = np.concatenate([p[0] for p in parts]).astype(np.int64, copy=False)
        if not len(idx):
            return idx, np.zeros(0)
        np.add.at(self.sums, idx, np.concatenate([p[1] for p in parts]))
        order = np.arange(len(idx))
        self.stamp[idx] = order
        once = idx[self.stamp[idx] == order]  # the last occurrence of each index
        values = self.sums[once]
        self.sums[once] = 0.0
        return once, values


def push(matrix: tuple[np.ndarray, np.ndarray, np.ndarray], src: np.ndarray,
         weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """weight[i] * matrix[src[i], :] for every i, as (targets, values) pairs (repeats not summed):
    reads only the rows named in src."""
    indptr, indices, data = matrix
    inside = src < len(indptr) - 1  # rows past the matrix (added after it was built) hold nothing here
    src, weight = src[inside], weight[inside]
    starts = indptr[src]
    lens = indptr[src + 1] - starts
    total = int(lens.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    at = np.arange(total) + np.repeat(starts - (np.cumsum(lens) - lens), lens)
    return indices[at], data[at] * np.repeat(weight, lens)


def _tail_push(src_of: np.ndarray, dst_of: np.ndarray, src: np.ndarray,
               weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The same push over coupling pairs kept outside the matrices."""
    if not len(src_of) or not len(src):
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    order = np.argsort(src)
    src, weight = src[order], weight[order]
    hit = np.isin(src_of, src)
    return dst_of[hit].astype(np.int64), weight[np.searchsorted(src, src_of[hit])]


def local_spread(g: Couplings, seed_scenes: tuple[np.ndarray, np.ndarray], seed_entities: tuple[np.ndarray, np.ndarray],
                 restart: float, iterations: int, floor: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """(scene positions, sorted; activation) after `iterations` synchronous steps from normalised seeds.

    Each step: scenes <- (1 - restart) * entities' activation spread to their scenes + restart * scene seeds;
    entities <- (1 - restart) * scenes' activation spread to their entities + restart * entity seeds.
    With a floor, an entity whose share per holder is under it does not spread (a hub held by a fifth of
    memory gives each holder almost nothing, at the price of reading them all), and activation under it
    is dropped.
    """
    ps_idx, ps_val = seed_scenes
    pe_idx, pe_val = seed_entities
    total = float(ps_val.sum() + pe_val.sum())
    if total <= 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    scenes, entities = Accumulator(g.scenes), Accumulator(g.entities)
    ps = scenes((ps_idx, ps_val / total))
    pe = entities((pe_idx, pe_val / total))
    tail_s, tail_e = g.tail if g.tail is not None else (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
    xs, xe = ps, pe
    for _ in range(iterations):
        from_e = (1 - restart) * xe[1] * g.entity_out[xe[0]]
        if floor > 0:
            spreads = from_e >= floor
            xe, from_e = (xe[0][spreads], xe[1][spreads]), from_e[spreads]
        from_s = (1 - restart) * xs[1] * g.scene_out[xs[0]]
        new_s = scenes(push(g.cols, xe[0], from_e), _tail_push(tail_e, tail_s, xe[0], from_e),
                       (ps[0], restart * ps[1]))
        to_e = entities(push(g.rows, xs[0], from_s), _tail_push(tail_s, tail_e, xs[0], from_s))
        xe = entities((to_e[0], to_e[1] * g.entity_in[to_e[0]]), (pe[0], restart * pe[1]))
        xs = new_s
        if floor > 0:
            keep = xs[1] >= floor
            xs = (xs[0][keep], xs[1][keep])
            keep = xe[1] >= floor
            xe = (xe[0][keep], xe[1][keep])
    order = np.argsort(xs[0])
    return xs[0][order], xs[1][order]
