"""What formulas, crystals and fields keep of scenes that are forgotten.

A formula is a chain of scenes linked by shared entities, with one clause per scene in its
summary: it loses the forgotten scene's citation and clause (and gets the id of its new chain),
and is dropped when fewer than two scenes remain, when the rest no longer hang together (no
shared entity links them), or when its summary cannot be cut per scene. A crystal loses the
citation and weakens in proportion (strength x cited-left / cited); one left citing nothing
is dropped (its vector, an average of past fields, is kept as it is). A logged field (what
crystals form from) loses the citation; one left citing nothing is dropped.

Every step is idempotent (a rewritten formula is written before the old one is deleted), so
a removal killed half-way and run again ends as one run to the end.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from adapters.coupling_index import CouplingGraph
    from adapters.memory import Memory

SUMMARY_JOIN = " → "  # how nodes.formulate joins a chain's clauses
MATCH_BATCH = 100  # ids per metadata query


def formula_id(chain: list[str]) -> str:
    """A formula's id: its chain's scenes, in any order."""
    return "f-" + hashlib.sha256("|".join(sorted(chain)).encode()).hexdigest()[:16]


@dataclass
class CitationReport:
    formulas_dropped: int = 0
    formulas_rewritten: int = 0
    crystals_dropped: int = 0
    crystals_weakened: int = 0
    fields_changed: int = 0


def citing(mem: Memory, kind: str, key: str, ids: set[str]) -> dict[str, dict[str, Any]]:
    """id -> {"text", "meta"} of the items of `kind` whose list metadata `key` holds any of `ids`."""
    found: set[str] = set()
    ordered = sorted(ids)
    for start in range(0, len(ordered), MATCH_BATCH):
        chunk = [{key: {"$contains": sid}} for sid in ordered[start : start + MATCH_BATCH]]
        found.update(mem.store.ids_where(chunk[0] if len(chunk) == 1 else {"$or": chunk}, kind=kind))
    return mem.store.documents(sorted(found), kind=kind)


def hangs_together(graph: CouplingGraph, chain: list[str]) -> bool:
    """Whether the scenes are one group when scenes sharing an entity (held by more than one scene) are linked."""
    keys = {sid: {e for e in graph.entities_of(graph.position[sid]) if graph.df(e) > 1}
            for sid in chain if sid in graph.position}
    if len(keys) < len(chain):
        return False
    reached, queue = {chain[0]}, [chain[0]]
    while queue:
        here = queue.pop()
        for other in chain:
            if other not in reached and keys[here] & keys[other]:
                reached.add(other)
                queue.append(other)
    return len(reached) == len(chain)


def forget_citations(mem: Memory, ids: set[str]) -> CitationReport:
    """Take `ids` out of every formula, crystal and field that cites them (the caller holds the writer lock)."""
    report = CitationReport()
    for fid, item in citing(mem, "formulas", "chain", ids).items():
        chain = [str(s) for s in item["meta"].get("chain", [])]
        rest = [sid for sid in chain if sid not in ids]
        parts = item["text"].split(SUMMARY_JOIN)
        vectors = mem.scenes(rest)
        with mem.couplings.reading() as graph:  # still while the chain is checked (a service reads it too)
            holds = len(rest) >= 2 and len(parts) == len(chain) and len(vectors) == len(rest) and \
                hangs_together(graph, rest)
        if holds:
            summary = SUMMARY_JOIN.join(p for sid, p in zip(chain, parts) if sid not in ids)
            vector = np.sum([vectors[sid].vector for sid in rest], axis=0)
            vector = vector / max(float(np.linalg.norm(vector)), 1e-12)
            new_id = formula_id(rest)
            mem.store.upsert([new_id], vector[None, :], [summary], [{**item["meta"], "chain": rest}], kind="formulas")
            report.formulas_rewritten += 1
            if new_id == fid:
                continue
        else:
            report.formulas_dropped += 1
        mem.store.delete([fid], kind="formulas")
    for kind in ("crystals", "fields"):
        for cid, item in citing(mem, kind, "scene_ids", ids).items():
            cited = [str(s) for s in item["meta"].get("scene_ids", [])]
            rest = [sid for sid in cited if sid not in ids]
            if not rest:
                mem.store.delete([cid], kind=kind)
                if kind == "crystals":
                    report.crystals_dropped += 1
                else:
                    report.fields_changed += 1
                continue
            meta: dict[str, Any] = {"scene_ids": rest}
            if kind == "crystals":
                meta["strength"] = float(item["meta"].get("strength", 1.0)) * len(rest) / len(cited)
                report.crystals_weakened += 1
            else:
                report.fields_changed += 1
            mem.store.update_meta([cid], [meta], kind=kind)
    return report
