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

# Below this share of the target space, sorting the touched ids beats a dense scratch array.
SPARSE_SHARE = 8


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


def push(matrix: tuple[np.ndarray, np.ndarray, np.ndarray], src: np.ndarray, weight: np.ndarray,
         size: int) -> tuple[np.ndarray, np.ndarray]:
    """sum_i weight[i] * matrix[src[i], :] as (targets, values): reads only the rows named in src."""
    indptr, indices, data = matrix
    inside = src < len(indptr) - 1  # rows past the matrix (added after it was built) hold nothing here
    src, weight = src[inside], weight[inside]
    starts = indptr[src]
    lens = indptr[src + 1] - starts
    total = int(lens.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    at = np.arange(total) + np.repeat(starts - (np.cumsum(lens) - lens), lens)
    targets = indices[at]
    values = data[at] * np.repeat(weight, lens)
    if total * SPARSE_SHARE < size:
        uniq, inv = np.unique(targets, return_inverse=True)
        return uniq, np.bincount(inv, weights=values)
    dense = np.bincount(targets, weights=values, minlength=size)
    hit = np.flatnonzero(dense)
    return hit, dense[hit]


def _add(*parts: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Sum of sparse vectors given as (sorted or not) index and value arrays: sorted unique indices."""
    idx = np.concatenate([p[0] for p in parts])
    val = np.concatenate([p[1] for p in parts])
    uniq, inv = np.unique(idx, return_inverse=True)
    return uniq, np.bincount(inv, weights=val)


def _tail_push(src_of: np.ndarray, dst_of: np.ndarray, src: np.ndarray,
               weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The same push over coupling pairs kept outside the matrices; `src` sorted."""
    if not len(src_of) or not len(src):
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    hit = np.isin(src_of, src)
    return dst_of[hit].astype(np.int64), weight[np.searchsorted(src, src_of[hit])]


def local_spread(g: Couplings, seed_scenes: tuple[np.ndarray, np.ndarray], seed_entities: tuple[np.ndarray, np.ndarray],
                 restart: float, iterations: int, floor: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """(scene positions, activation) after `iterations` synchronous steps from normalised seeds.

    Each step: scenes <- (1 - restart) * entities' activation spread to their scenes + restart * scene seeds;
    entities <- (1 - restart) * scenes' activation spread to their entities + restart * entity seeds.
    """
    ps_idx, ps_val = seed_scenes
    pe_idx, pe_val = seed_entities
    total = float(ps_val.sum() + pe_val.sum())
    if total <= 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    ps = _add((ps_idx.astype(np.int64), ps_val / total))
    pe = _add((pe_idx.astype(np.int64), pe_val / total))
    tail_s, tail_e = g.tail if g.tail is not None else (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
    xs, xe = ps, pe
    for _ in range(iterations):
        from_e = xe[1] * g.entity_out[xe[0]]
        from_s = xs[1] * g.scene_out[xs[0]]
        to_scenes = _add(push(g.cols, xe[0], from_e, g.scenes), _tail_push(tail_e, tail_s, xe[0], from_e))
        to_entities = _add(push(g.rows, xs[0], from_s, g.entities), _tail_push(tail_s, tail_e, xs[0], from_s))
        xs = _add((to_scenes[0], (1 - restart) * to_scenes[1]), (ps[0], restart * ps[1]))
        xe = _add((to_entities[0], (1 - restart) * to_entities[1] * g.entity_in[to_entities[0]]),
                  (pe[0], restart * pe[1]))
        if floor > 0:
            keep = xs[1] >= floor
            xs = (xs[0][keep], xs[1][keep])
            keep = xe[1] >= floor
            xe = (xe[0][keep], xe[1][keep])
    return xs
