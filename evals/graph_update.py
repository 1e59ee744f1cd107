"""How long the coupling graph takes to change: a full build, then adding / removing 1,000 scenes.

Scenes are the demo corpus's keys under fresh ids, repeated to the asked size (no store, no
embedder: the graph alone). Prints one line per size; the numbers go to the scale table.

    python -m evals.graph_update --sizes 20000 100000
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from adapters.coupling_index import CouplingGraph
from adapters.lexicon import scene_keys, terms_of
from scenemind_data import DEMO_QUESTION, DEMO_SCENES

CHANGE = 1_000


def query(g: CouplingGraph) -> float:
    """One resonance's graph work: BM25, entity bonus and 15 spreading steps."""
    t0 = time.perf_counter()
    entities = g.query_entities(DEMO_QUESTION)
    g.bm25_at(terms_of(DEMO_QUESTION))
    g.entity_bonus_at(entities, 1.0, 0.5)
    g.spread({0: 1.0, 1: 0.5}, entities, 0.3, 15)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", type=int, nargs="+", default=[20_000, 100_000])
    args = ap.parse_args()
    demo = [json.loads(line) for line in DEMO_SCENES.read_text(encoding="utf-8").splitlines() if line.strip()]
    keys = [(r.get("title"), scene_keys(r["text"], r.get("title"))) for r in demo]
    for size in args.sizes:
        rows = [(f"s{i}", *keys[i % len(keys)]) for i in range(size + CHANGE)]
        g = CouplingGraph()
        t0 = time.perf_counter()
        for row in rows[:size]:
            g.add(*row)
        g.ready()
        build = time.perf_counter() - t0
        cold = query(g)
        warm = query(g)
        t0 = time.perf_counter()
        for row in rows[size:]:
            g.add(*row)
        g.ready()
        add = time.perf_counter() - t0
        after_add = query(g)
        gone = [f"s{i}" for i in np.random.default_rng(0).choice(size, CHANGE, replace=False)]
        t0 = time.perf_counter()
        for sid in gone:
            g.remove(sid)
        g.ready()
        remove = time.perf_counter() - t0
        after_remove = query(g)
        print(json.dumps({"scenes": size, "build_s": round(build, 3), "add_1000_s": round(add, 4),
                          "remove_1000_s": round(remove, 4), "query_s": round(warm, 4),
                          "first_query_s": round(cold, 4), "query_after_add_s": round(after_add, 4),
                          "query_after_remove_s": round(after_remove, 4)}), flush=True)


if __name__ == "__main__":
    main()
