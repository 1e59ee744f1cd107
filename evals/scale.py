"""Scale benchmark: memories of 10k, 100k and 1M scenes; ingest, memory, disk, graph and latency at each.

    python -m evals.scale [--sizes 10000 100000 1000000] [--questions 100] [--real-ingest 10000]
                          [--cache evals/.scale] [--json] [--record] [--plot evals/scale.png]

What each memory holds: the 1,890 passages of musique_train_corpus (the gold passages of
the 100 musique_train questions and their distractors, embedded for real), plus synthetic
scenes up to the size: 3-5 real sentences of the 2WikiMultihopQA and HotpotQA corpora
(never MuSiQue's, so no distractor copies a gold sentence), drawn at random and joined,
titled by the first sentence's article. The draw is seeded per block of 10,000 scenes, so
the 10k memory is the first 10k scenes of the 100k one, which is the start of the 1M one.

How their vectors are made: every pool sentence and article title is embedded once with the
memory's embedder (cached); a synthetic scene's vector is the normalised sum of its title's
and its sentences' vectors. They are written through `adapters.bulk_ingest` (the same store,
couplings and locks as `scenemind ingest`, without the embedder), so the embedder is not the
subject. `--real-ingest N` also ingests the first N scenes the ordinary way (`Memory.ingest`,
the embedder timed apart) into a store of their own: the ingest split, how close the summed
vectors are to real ones, and the recall and latency on real vectors beside the bulk ones.

Each store is built once, in a child process, and kept under --cache (delete a folder to
rebuild it); measurements run in another child, so each peak RSS is that process's own:
- build: seconds for vectors / store (Chroma) / keys (text -> couplings) / couplings (SQLite);
- query: coupling-graph build (cold, from the index), incremental update (1,000 new scenes
  into the in-memory graph), and per question of musique_train (gold passages all in memory)
  the retrieval graph (interpret -> build_scene -> resonate -> expand <-> probe, as
  `evals.multihop --mode full`): resonate, each probe, and the whole run, p50/p95; recall@k;
  where the time goes (store query, BM25, entity bonus, spreading, scene reads);
- disk: the Chroma folder and couplings.sqlite.
Progress goes to stderr; the load average is recorded next to every timing (shared cores).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from adapters.scene_store import HNSW

ROOT = Path(__file__).resolve().parent
DATA = Path(os.environ.get("SCENEMIND_SHARED_DATA", ROOT.parent.parent / "shared" / "data")) / "multihop"
CACHE = ROOT / ".scale"
QUESTIONS = DATA / "musique_train.json"
POOL_CORPORA = (DATA / "2wikimultihopqa_corpus.json", DATA / "hotpotqa_train_corpus.json")
BLOCK = 10_000  # synthetic scenes drawn per seeded block
SEED = 20261129
MIN_AVAILABLE_GIB = 6.0  # a build stops when the machine has less than this available
WARM_QUESTION = "Where was the director of the film Gaby: A True Story born?"
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"(])")


# --- the scenes -----------------------------------------------------------------------------
class Pool:
    """Sentences of the pool corpora with their article titles, and (once embedded) their vectors."""

    def __init__(self, cache: Path, corpora: list[Path], limit: int = 0):
        sentences = []
        for path in corpora:
            raw = json.loads(path.read_text(encoding="utf-8"))
            items = raw.items() if isinstance(raw, dict) else ((p["title"], p["text"]) for p in raw)
            for title, text in items:
                parts = [s.strip() for s in text] if isinstance(text, list) else _SENTENCE.split(text)
                sentences.extend((s, title.strip()) for s in (" ".join(p.split()) for p in parts) if 30 <= len(s) <= 400)
        if limit:
            sentences = sentences[:limit]
        self.titles = list(dict.fromkeys(t for _, t in sentences))
        title_of = {t: n for n, t in enumerate(self.titles)}
        self.text = [s for s, _ in sentences]
        self.title_id = np.array([title_of[t] for _, t in sentences], dtype=np.int64)
        self.cache = cache / f"pool_vectors_{'_'.join(p.stem for p in corpora)}_{len(self.text)}.npz"
        self.sentence_vectors: np.ndarray | None = None
        self.title_vectors: np.ndarray | None = None
        self.embed_seconds = 0.0

    def embed(self, embedder) -> None:
        if self.cache.exists():
            saved = np.load(self.cache)
            if len(saved["sentences"]) == len(self.text) and len(saved["titles"]) == len(self.titles):
                self.sentence_vectors, self.title_vectors = saved["sentences"], saved["titles"]
                self.embed_seconds = float(saved["seconds"])
                return
        from tqdm import tqdm

        start = time.perf_counter()
        out = []
        texts = self.text + self.titles
        for i in tqdm(range(0, len(texts), 2048), desc="embed pool sentences", unit="k", file=sys.stderr):
            out.append(embedder.embed(texts[i : i + 2048]))
        vectors = np.concatenate(out).astype(np.float32)
        self.embed_seconds = time.perf_counter() - start
        self.sentence_vectors, self.title_vectors = vectors[: len(self.text)], vectors[len(self.text) :]
        self.cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(self.cache, sentences=self.sentence_vectors, titles=self.title_vectors, seconds=self.embed_seconds)

    def block(self, b: int) -> tuple[list[str], list[str], np.ndarray | None]:
        """Block b of synthetic scenes: (titles, texts, vectors or None before `embed`)."""
        rng = np.random.default_rng([SEED, b])
        counts = rng.integers(3, 6, size=BLOCK)
        picks = rng.integers(0, len(self.text), size=int(counts.sum()))
        ends = np.cumsum(counts)
        starts = ends - counts
        titles = [self.titles[self.title_id[picks[s]]] for s in starts]
        texts = [" ".join(self.text[i] for i in picks[s:e]) for s, e in zip(starts, ends)]
        vectors = None
        if self.sentence_vectors is not None:
            summed = np.add.reduceat(self.sentence_vectors[picks], starts, axis=0)
            summed += self.title_vectors[self.title_id[picks[starts]]]
            vectors = summed / np.linalg.norm(summed, axis=1, keepdims=True)
        return titles, texts, vectors


def synthetic(pool: Pool, count: int, first_block: int = 0):
    """(records, vectors) of `count` synthetic scenes, block by block from `first_block`."""
    from adapters.sources import SceneRecord

    b = first_block
    while count > 0:
        titles, texts, vectors = pool.block(b)
        take = min(count, BLOCK)
        yield ([SceneRecord(text=t, title=h) for h, t in zip(titles[:take], texts[:take])],
               None if vectors is None else vectors[:take])
        count -= take
        b += 1


def gold_records(question_file: Path, questions_n: int) -> list:
    """Every paragraph of the first `questions_n` musique_train questions (gold and their own distractors) as
    records, as evals.multihop ingests them: for all 100 questions, exactly musique_train_corpus."""
    from adapters.sources import SceneRecord
    from evals.multihop import load_questions

    records = [SceneRecord(text=x.strip(), title=t.strip() or None)
               for q in load_questions(str(question_file))[:questions_n] for t, x in q.pool if x.strip()]
    return list({r.scene_id: r for r in records}.values())


def gold(cache: Path, embedder, question_file: Path, questions_n: int) -> tuple[list, np.ndarray, float]:
    """The questions' paragraphs as records, their real vectors (cached) and the seconds embedding them took."""
    from adapters.memory import passage_text

    unique = gold_records(question_file, questions_n)
    path = cache / f"gold_vectors_{question_file.stem}_{questions_n}.npz"
    if path.exists():
        saved = np.load(path)
        if len(saved["vectors"]) == len(unique):
            return unique, saved["vectors"], float(saved["seconds"])
    start = time.perf_counter()
    vectors = embedder.embed([passage_text(r.title, r.text) for r in unique])
    seconds = time.perf_counter() - start
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, vectors=vectors, seconds=seconds)
    return unique, vectors, seconds


# --- process facts --------------------------------------------------------------------------
def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def available_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 2**20
    return float("inf")


def load() -> float:
    return round(os.getloadavg()[0], 1)


def disk_mb(path: Path) -> float:
    if path.is_file():
        return path.stat().st_size / 2**20
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20 if path.exists() else 0.0


class OutOfMemory(RuntimeError):
    pass


def memory_guard() -> None:
    free = available_gib()
    if free < MIN_AVAILABLE_GIB:
        raise OutOfMemory(f"available memory fell to {free:.1f} GiB (under {MIN_AVAILABLE_GIB} GiB)")


# --- building -------------------------------------------------------------------------------
def store_dir(args: argparse.Namespace, size: int, real: bool = False) -> Path:
    """One folder per store; other questions, gold set or pool (the test's) get a name of their own."""
    name = str(size) + ("" if args.question_file == QUESTIONS else f"-{args.question_file.stem}") + (
        "" if args.pool_corpus == list(POOL_CORPORA) else "-" + "-".join(p.stem for p in args.pool_corpus)) + (
        f"-q{args.gold_questions}" if args.gold_questions != 100 else "") + (
        f"-p{args.pool}" if args.pool else "") + ("-real" if real else "")
    return args.cache / name


def build(size: int, args: argparse.Namespace) -> dict[str, Any]:
    """Build (or finish) the bulk store of `size` scenes; its report is kept beside it as build.json."""
    from tqdm import tqdm

    from adapters.bulk_ingest import bulk_ingest

    where = store_dir(args, size)
    if (where / "build.json").exists():
        return json.loads((where / "build.json").read_text())
    embedder, pool, (records, vectors, gold_s) = materials(args)
    mem = new_memory(where, embedder, args.ef_construction)
    progress_file = where / "build-progress.json"
    # A build killed before is resumed (written scenes are skipped): its seconds so far carry over.
    before = json.loads(progress_file.read_text()) if progress_file.exists() else {}
    seconds: dict[str, float] = defaultdict(float, before.get("seconds_raw", {}))
    load_start = load()
    bar = tqdm(total=size, desc=f"build {size:,}", unit="scene", file=sys.stderr, smoothing=0.05)
    start = time.perf_counter() - before.get("wall_s", 0.0)

    def note_progress() -> None:
        progress_file.write_text(json.dumps({
            "size": size, "scenes": bar.n, "partial": True, "wall_s": time.perf_counter() - start,
            "seconds_raw": dict(seconds), "peak_rss_mb": round(peak_rss_mb()), "load": [load_start, load()],
            "written": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}))

    try:
        for part in bulk_ingest(mem, records, vectors, progress=bar.update, check=memory_guard).seconds.items():
            seconds[part[0]] += part[1]
        blocks = synthetic(pool, size - len(records))
        while True:
            t0 = time.perf_counter()
            block = next(blocks, None)
            seconds["vectors"] += time.perf_counter() - t0  # drawing the scenes and summing their vectors
            if block is None:
                break
            report = bulk_ingest(mem, block[0], block[1], progress=bar.update, check=memory_guard)
            for part, s in report.seconds.items():
                seconds[part] += s
            note_progress()
    except OutOfMemory as exc:
        bar.close()
        note_progress()
        return {"size": size, "aborted": f"{exc} after {bar.n:,} scenes", "peak_rss_mb": peak_rss_mb()}
    bar.close()
    wall = time.perf_counter() - start
    scenes = mem.store.count()
    # The vectors' cost: the pool's one-time embedding and the gold passages' real embedding, plus summing.
    out = {
        "size": size, "scenes": scenes, "wall_s": round(wall, 1),
        "seconds": {"embed_pool_once": round(pool.embed_seconds, 1), "embed_gold": round(gold_s, 1),
                    **{k: round(v, 1) for k, v in seconds.items()}},
        "scenes_per_s": round(scenes / wall, 1),
        "write_per_s": round(scenes / max(sum(seconds.values()), 1e-9), 1),
        "peak_rss_mb": round(peak_rss_mb()), "load": [load_start, load()],
        "disk_mb": disk_sizes(where), "pool_sentences": len(pool.text), "pool_titles": len(pool.titles),
        "hnsw": hnsw_in(where), "built": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    (where / "build.json").write_text(json.dumps(out, indent=1))
    return out


def new_memory(where: Path, embedder, ef_construction: int):
    """The store's Memory; a store created here gets `ef_construction` (one that exists keeps its own).

    HNSW construction is what a bulk build spends most of its time on (hnswlib's distance loop: 65-95% of
    the build process's CPU at 100k scenes, sampled with perf), and its cost grows with ef_construction.
    It is fixed when the collection is created; M and ef_search, what a query costs, are not changed."""
    from unittest import mock

    from adapters import scene_store
    from adapters.memory import Memory

    if (where / "chroma").exists():
        return Memory(str(where), embedder, create=True)
    with mock.patch.dict(scene_store.HNSW, ef_construction=ef_construction):
        return Memory(str(where), embedder, create=True)


def hnsw_in(where: Path) -> dict[str, Any]:
    """The scene collection's HNSW settings, read from Chroma's catalogue (no client opened; {} if unreadable)."""
    import sqlite3

    try:
        db = sqlite3.connect(f"file:{where / 'chroma' / 'chroma.sqlite3'}?mode=ro", uri=True)
        try:
            row = db.execute("SELECT schema_str FROM collections WHERE name = 'scenemind_scenes'").fetchone()
        finally:
            db.close()
        hnsw = json.loads(row[0])["keys"]["#embedding"]["float_list"]["vector_index"]["config"]["hnsw"]
    except (sqlite3.Error, TypeError, KeyError, ValueError):
        return {}
    return {k: hnsw.get(k) for k in ("ef_construction", "max_neighbors", "ef_search")}


def build_so_far(size: int, args: argparse.Namespace) -> dict[str, Any]:
    """The build report of a store, finished or not (--measure-only: measure what a stopped build wrote)."""
    where = store_dir(args, size)
    if (where / "build.json").exists():
        return json.loads((where / "build.json").read_text())
    if not (where / "build-progress.json").exists():
        return {"error": f"no store built at {where}: run without --measure-only first"}
    done = json.loads((where / "build-progress.json").read_text())
    raw = done.pop("seconds_raw")
    return {**done, "seconds": {k: round(v, 1) for k, v in raw.items()},
            "write_per_s": round(done["scenes"] / max(sum(raw.values()), 1e-9), 1), "disk_mb": disk_sizes(where)}


def materials(args: argparse.Namespace) -> tuple[Any, Pool, tuple[list, np.ndarray, float]]:
    """The embedder, the embedded sentence pool and the gold records with their vectors."""
    from adapters.embedder import load_embedder

    embedder = load_embedder(args.embedder)
    pool = Pool(args.cache, args.pool_corpus, args.pool)
    pool.embed(embedder)
    return embedder, pool, gold(args.cache, embedder, args.question_file, args.gold_questions)


def disk_sizes(where: Path) -> dict[str, float]:
    chroma, couplings = disk_mb(where / "chroma"), sum(disk_mb(p) for p in where.glob("couplings.sqlite*"))
    return {"chroma": round(chroma, 1), "couplings": round(couplings, 1), "total": round(chroma + couplings, 1)}


def real_ingest(size: int, args: argparse.Namespace) -> dict[str, Any]:
    """The first `size` scenes through `Memory.ingest` (the ordinary path) with the embedder timed apart."""
    from tqdm import tqdm

    from adapters.memory import Memory

    where = store_dir(args, size, real=True)
    if (where / "build.json").exists():
        return json.loads((where / "build.json").read_text())
    embedder, pool, (records, _, _) = materials(args)
    n_gold, bulk_vectors = len(records), []
    for block_records, block_vectors in synthetic(pool, size - n_gold):
        records.extend(block_records)
        bulk_vectors.append(block_vectors)
    spent = [0.0]
    inner = embedder._embed

    def timed(texts, role):
        t0 = time.perf_counter()
        try:
            return inner(texts, role)
        finally:
            spent[0] += time.perf_counter() - t0

    embedder._embed = timed
    mem = Memory(str(where), embedder, create=True)
    spent[0] = 0.0  # the fingerprint texts are not the ingest's
    load_start = load()
    bar = tqdm(total=len(records), desc=f"real ingest {size:,}", unit="scene", file=sys.stderr)
    start = time.perf_counter()
    mem.ingest(records, progress=bar.update)
    wall = time.perf_counter() - start
    bar.close()
    embedder._embed = inner
    # How close the summed sentence vectors are to the embedder's own vector of the joined text.
    synth = records[n_gold : n_gold + 2000]
    stored = mem.store.get([r.scene_id for r in synth], vectors=True)
    flat = np.concatenate(bulk_vectors)[: len(synth)] if bulk_vectors else np.zeros((0, embedder.dim))
    cos = [float(stored[r.scene_id]["vector"] @ v) for r, v in zip(synth, flat) if r.scene_id in stored]
    out = {
        "size": size, "scenes": mem.store.count(), "wall_s": round(wall, 1),
        "seconds": {"embed": round(spent[0], 1), "else": round(wall - spent[0], 1)},
        "scenes_per_s": round(len(records) / wall, 1), "embed_per_s": round(len(records) / max(spent[0], 1e-9), 1),
        "peak_rss_mb": round(peak_rss_mb()), "load": [load_start, load()], "disk_mb": disk_sizes(where),
        "summed_vs_real_cosine": {"n": len(cos), "mean": round(float(np.mean(cos)), 3) if cos else None,
                                  "p5": round(float(np.percentile(cos, 5)), 3) if cos else None},
        "built": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    (where / "build.json").write_text(json.dumps(out, indent=1))
    return out


# --- measuring ------------------------------------------------------------------------------
class Stages:
    """Wall time per retrieval stage, summed over a question's resonances (probes run in threads: CPU-ish sums)."""

    NAMES = ("store_query", "query_entities", "bm25", "entity_bonus", "spread", "scene_reads", "crystals")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now: dict[str, float] = defaultdict(float)

    def wrap(self, owner: Any, attr: str, name: str) -> None:
        inner = getattr(owner, attr)

        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                with self.lock:
                    self.now[name] += time.perf_counter() - t0

        setattr(owner, attr, timed)

    def take(self) -> dict[str, float]:
        with self.lock:
            out, self.now = dict(self.now), defaultdict(float)
        return out


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50": None, "p95": None, "n": 0}
    return {"p50": round(1000 * float(np.percentile(values, 50)), 1),
            "p95": round(1000 * float(np.percentile(values, 95)), 1), "n": len(values)}


def measure(where: Path, args: argparse.Namespace, ks=(2, 5, 10)) -> dict[str, Any]:
    """Open the store cold, build its coupling graph, run the questions, update the graph by 1,000 scenes."""
    from adapters.coupling_index import CouplingGraph
    from adapters.lexicon import scene_keys
    from adapters.memory import open_memory
    from graph.builder import build_graph

    load_start = load()
    t0 = time.perf_counter()
    mem = open_memory(str(where), args.embedder)
    open_s = time.perf_counter() - t0
    rss_open = peak_rss_mb()
    t0 = time.perf_counter()
    graph = mem.couplings.graph()
    graph_s = time.perf_counter() - t0
    rss_graph = peak_rss_mb()
    stages = Stages()
    stages.wrap(mem.store, "nearest_ids", "store_query")
    stages.wrap(mem.store, "nearest", "crystals")
    stages.wrap(mem, "scenes", "scene_reads")
    for attr, name in (("bm25_at", "bm25"), ("entity_bonus_at", "entity_bonus"), ("spread", "spread"), ("spread_near", "spread"),
                       ("query_entities", "query_entities")):
        stages.wrap(CouplingGraph, attr, name)
    ctx = context(where, args)
    retrieval = build_graph(retrieval_only=True)
    t0 = time.perf_counter()
    retrieval.invoke({"question": WARM_QUESTION}, context=ctx)  # loads the HNSW index and warms the caches
    first_s = time.perf_counter() - t0
    stages.take()

    asked = ask_all(retrieval, ctx, args, stages, f"questions at {graph.n:,}", ks)
    load_queries = load()
    # Incremental: 1,000 scenes that are in no store, into the in-memory graph (keys computed beforehand).
    pool = Pool(args.cache, args.pool_corpus, args.pool)
    extra = next(synthetic(pool, 1000, first_block=10_000))[0]
    keyed = [(r.scene_id, r.title, scene_keys(r.text, r.title)) for r in extra]
    t0 = time.perf_counter()
    for sid, title, keys in keyed:
        graph.add(sid, title, keys)
    graph.ready()
    update_s = time.perf_counter() - t0
    return {
        "settings": list(args.set), "scenes": graph.n - len(keyed), "open_s": round(open_s, 2), "graph_build_s": round(graph_s, 2),
        "graph_update_1000_s": round(update_s, 3), "first_query_s": round(first_s, 2),
        **asked,
        "peak_rss_mb": round(peak_rss_mb()), "rss_after_open_mb": round(rss_open), "rss_after_graph_mb": round(rss_graph),
        "load": [load_start, load_queries], "disk_mb": disk_sizes(where),
        "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def context(where: Path, args: argparse.Namespace):
    """The run's Context: the store, the embedder and the --set overrides (typed like the defaults)."""
    from dataclasses import replace

    from state.context import Context

    ctx = Context(data_dir=str(where), embedder=args.embedder)
    for item in args.set:
        name, value = item.split("=", 1)
        ctx = replace(ctx, **{name: type(getattr(ctx, name))(value)})
    return ctx


def ask_all(retrieval, ctx, args: argparse.Namespace, stages: Stages, desc: str, ks=(2, 5, 10)) -> dict[str, Any]:
    """Every question through the retrieval graph: latency of resonate, each probe and the whole run; recall@k;
    time per stage."""
    from tqdm import tqdm

    from evals.multihop import load_questions, passage_key

    ids = {passage_key(r.title or "", r.text): r.scene_id for r in gold_records(args.question_file, args.gold_questions)}
    questions = load_questions(str(args.question_file))[: args.questions]
    full, cpu, reson, probes, recalls = [], [], [], [], defaultdict(list)
    stage_rows: list[dict[str, float]] = []
    for q in tqdm(questions, desc=desc, file=sys.stderr):
        started: dict[str, float] = {}
        final: dict = {}
        c_start = time.process_time()  # CPU of every thread of this process: what load on shared cores cannot inflate
        t_start = time.perf_counter()
        for mode, ev in retrieval.stream({"question": q.text}, context=ctx, stream_mode=["tasks", "values"]):
            now = time.perf_counter()
            if mode == "values":
                final = ev
            elif "result" in ev or "error" in ev:
                spent = now - started.pop(ev["id"], now)
                if ev["name"] == "resonate":
                    reson.append(spent)
                elif ev["name"] == "probe":
                    probes.append(spent)
            else:
                started[ev["id"]] = now
        full.append(time.perf_counter() - t_start)
        cpu.append(time.process_time() - c_start)
        stage_rows.append(stages.take())
        gold_ids = {ids.get(passage_key(t, x)) for t, x in q.gold} - {None}
        ranked = [r.id for r in sorted(final.get("active", {}).values(), key=lambda r: -r.score)]
        for k in ks:
            recalls[k].append(len(gold_ids & set(ranked[:k])) / len(gold_ids) if gold_ids else 0.0)
    return {
        "latency_ms": {"resonate": percentiles(reson), "probe": percentiles(probes), "full": percentiles(full),
                       "full_cpu": percentiles(cpu)},
        "stages_ms_p50": {n: round(1000 * float(np.median([r.get(n, 0.0) for r in stage_rows])), 1)
                          for n in Stages.NAMES},
        "stages_ms_mean": {n: round(1000 * float(np.mean([r.get(n, 0.0) for r in stage_rows])), 1)
                           for n in Stages.NAMES},
        "recall": {f"R@{k}": round(100 * float(np.mean(v)), 1) for k, v in recalls.items()},
        "per_question_recall": {f"R@{k}": [round(x, 3) for x in v] for k, v in recalls.items()},
        "questions": len(questions),
    }


CHURN_SOURCE = "evals.scale churn"


def churn(size: int, args: argparse.Namespace, count: int = 1000) -> dict[str, Any]:
    """On a copy of the `size` store: add `count` new scenes through `Memory.ingest` (real embedder), then forget
    them (`Memory.forget`); each against the time the embedder alone takes for those scenes, with the graph's
    catch-up timed apart and recall of the questions before and after."""
    from adapters.memory import Memory, open_memory, passage_text
    from graph.builder import build_graph

    if not hasattr(Memory, "forget"):
        return {"error": "Memory.forget is not in this tree: add/forget not measured"}
    source = store_dir(args, size)
    where = args.cache / f"{source.name}-churn"
    shutil.rmtree(where, ignore_errors=True)
    shutil.copytree(source, where)
    try:
        mem = open_memory(str(where), args.embedder)
        mem.couplings.graph()
        stages = Stages()
        ctx = context(where, args)
        retrieval = build_graph(retrieval_only=True)
        retrieval.invoke({"question": WARM_QUESTION}, context=ctx)
        before = ask_all(retrieval, ctx, args, stages, f"questions before churn at {size:,}")
        new = next(synthetic(Pool(args.cache, args.pool_corpus, args.pool), count, first_block=20_000))[0]
        texts = [passage_text(r.title, r.text) for r in new]
        load_start = load()
        t0 = time.perf_counter()
        mem.embedder.embed(texts)
        embed_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        added = mem.ingest(new, source=CHURN_SOURCE)
        add_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        mem.couplings.graph()
        add_graph_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        forgot = mem.forget(source=CHURN_SOURCE)
        forget_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        mem.couplings.graph()
        forget_graph_s = time.perf_counter() - t0
        load_end = load()
        after = ask_all(retrieval, ctx, args, stages, f"questions after churn at {size:,}")
        return {
            "size": size, "scenes_changed": count, "added": added.added,
            "forgotten": getattr(forgot, "removed", None),
            "embed_only_s": round(embed_s, 2), "add_s": round(add_s, 2), "add_graph_catch_up_s": round(add_graph_s, 3),
            "forget_s": round(forget_s, 2), "forget_graph_catch_up_s": round(forget_graph_s, 3),
            "add_vs_embed": round((add_s + add_graph_s) / embed_s, 2),
            "forget_vs_embed": round((forget_s + forget_graph_s) / embed_s, 2),
            "recall_before": before["recall"], "recall_after": after["recall"],
            "same_per_question": before["per_question_recall"] == after["per_question_recall"],
            "changed_questions": {k: [i for i, (x, y) in enumerate(zip(v, after["per_question_recall"][k])) if x != y]
                                  for k, v in before["per_question_recall"].items()},
            "scenes_after": mem.store.count(), "load": [load_start, load_end],
            "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        }
    finally:
        shutil.rmtree(where, ignore_errors=True)


# --- driving --------------------------------------------------------------------------------
def step_file(step: str, size: int, args: argparse.Namespace, settings: list[str]) -> Path:
    """Where a finished step's JSON is kept: a rerun with the same step, store, questions and settings reuses it."""
    tag = "-".join(sorted(settings)).replace("=", "") or "defaults"
    return args.cache / "steps" / f"{store_dir(args, size).name}-{step}-q{args.questions}-{tag}.json"


def child(step: str, size: int, args: argparse.Namespace, settings: list[str] | None = None) -> dict[str, Any]:
    """Run one step in a fresh process (its own peak RSS); its JSON is the last line of its stdout.

    Builds keep their report beside the store; other steps are kept under CACHE/steps (--fresh reruns them)."""
    settings = list(args.set if settings is None else settings)
    kept = step_file(step, size, args, settings)
    if step != "build" and kept.exists() and not args.fresh:
        return json.loads(kept.read_text())
    cmd = [sys.executable, "-m", "evals.scale", "--step", step, "--sizes", str(size), "--questions",
           str(args.questions), "--gold-questions", str(args.gold_questions), "--pool", str(args.pool),
           "--question-file", str(args.question_file), "--pool-corpus", *map(str, args.pool_corpus),
           "--cache", str(args.cache), "--embedder", args.embedder, "--churn", str(args.churn),
           "--ef-construction", str(args.ef_construction), "--set", *settings]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT.parent)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode or not lines:
        return {"error": f"step {step} at {size:,} exited {proc.returncode}"}
    out = json.loads(lines[-1])
    if step != "build" and "error" not in out:
        kept.parent.mkdir(parents=True, exist_ok=True)
        kept.write_text(json.dumps(out, indent=1))
    return out


def run_step(step: str, size: int, args: argparse.Namespace) -> dict[str, Any]:
    if step == "build":
        return build(size, args)
    if step == "real":
        return real_ingest(size, args)
    if step == "query":
        return measure(store_dir(args, size), args)
    if step == "churn":
        return churn(size, args)
    if step == "query-real":
        return measure(store_dir(args, size, real=True), args)
    raise ValueError(step)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--questions", type=int, default=100, help="measure the first N musique_train questions")
    ap.add_argument("--gold-questions", type=int, default=100,
                    help="memory holds the paragraphs of the first N questions (100: all of musique_train_corpus)")
    ap.add_argument("--question-file", type=Path, default=QUESTIONS,
                    help="MuSiQue-style questions whose paragraphs the memory holds (default: musique_train)")
    ap.add_argument("--pool-corpus", type=Path, nargs="+", default=list(POOL_CORPORA),
                    help="corpora whose sentences make the synthetic scenes ({title, text} list or title -> sentences)")
    ap.add_argument("--pool", type=int, default=0, help="draw synthetic scenes from the first N pool sentences only")
    ap.add_argument("--real-ingest", type=int, default=10_000, metavar="N",
                    help="also ingest the first N scenes through Memory.ingest with the real embedder (0: skip)")
    ap.add_argument("--cache", type=Path, default=CACHE)
    ap.add_argument("--embedder", default="all-MiniLM-L6-v2")
    ap.add_argument("--ef-construction", type=int, default=HNSW["ef_construction"],
                    help="HNSW ef_construction of stores this run creates (existing ones keep theirs; "
                         "build cost grows with it, query cost does not)")
    ap.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE",
                    help="Context overrides for the questions, e.g. spread_floor=0.2")
    ap.add_argument("--baseline", nargs="*", default=[], metavar="FIELD=VALUE",
                    help="also measure the questions with these overrides, e.g. spread_floor=0 (the whole-graph walk)")
    ap.add_argument("--baseline-max", type=int, default=0, metavar="SIZE",
                    help="measure --baseline only at sizes up to SIZE (0: all; the whole-graph walk takes seconds "
                         "per question past 100k scenes)")
    ap.add_argument("--measure-only", action="store_true",
                    help="do not build: measure the stores as they are (a stopped build is resumed by a later run)")
    ap.add_argument("--fresh", action="store_true", help="rerun measurements kept under CACHE/steps")
    ap.add_argument("--out", type=Path, help="also write the results JSON here")
    ap.add_argument("--note", default="", help="a paragraph of conditions written under the table (with --record)")
    ap.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    ap.add_argument("--record", action="store_true", help="replace the Scale section of evals/RESULTS.md")
    ap.add_argument("--plot", default=str(ROOT / "scale.png"))
    ap.add_argument("--churn", type=int, default=100_000, metavar="SIZE",
                    help="add 1,000 scenes to the SIZE memory, then forget them, timed against embedding them (0: skip)")
    ap.add_argument("--step", choices=("build", "real", "query", "query-real", "churn"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if any(s < 1 for s in args.sizes):
        ap.error("sizes must be positive")
    for item in args.set + args.baseline:
        from state.context import Context

        name = item.split("=", 1)[0]
        if "=" not in item or name not in Context.__dataclass_fields__:
            ap.error(f"--set takes FIELD=VALUE with a Context field, got {item!r}")
    if not 1 <= args.questions <= args.gold_questions:
        ap.error("need 1 <= --questions <= --gold-questions")
    for path in [args.question_file, *args.pool_corpus]:
        if not path.is_file():
            ap.error(f"no such file: {path} (set SCENEMIND_SHARED_DATA to the folder holding multihop/)")
    if args.step:  # a child: one step, JSON on the last line
        print(json.dumps(run_step(args.step, args.sizes[0], args)))
        return 0
    results: dict[str, Any] = {"sizes": {}, "questions": args.questions, "settings": list(args.set),
                               "baseline": list(args.baseline)}
    for size in sorted(args.sizes):
        row: dict[str, Any] = {"build": build_so_far(size, args) if args.measure_only else child("build", size, args)}
        row["hnsw"] = hnsw_in(store_dir(args, size))
        if "error" not in row["build"] and "aborted" not in row["build"]:
            row["query"] = child("query", size, args)
            if args.baseline and (not args.baseline_max or size <= args.baseline_max):
                row["baseline"] = child("query", size, args, settings=args.set + args.baseline)
        if args.real_ingest and size == args.real_ingest:
            row["real"] = child("real", size, args)
            if "error" not in row["real"]:
                row["query_real"] = child("query-real", size, args)
        if args.churn and size == args.churn and "query" in row:
            row["churn"] = child("churn", size, args)
        results["sizes"][str(size)] = row
        print(f"{size:,}: " + ", ".join(f"{step} {'error' if 'error' in v else 'done'}" for step, v in row.items()),
              file=sys.stderr)
    print(table(results))
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))
    if args.plot:
        plot(results, Path(args.plot))
    if args.record:
        record(results, args)
    if args.json:
        print(json.dumps(results))
    return 0


def _configs(row: dict[str, Any], results: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    label = " ".join(results.get("settings") or []) or "defaults"
    out = [(label, row.get("query", {}))]
    if "baseline" in row:
        out.append((" ".join((results.get("settings") or []) + results.get("baseline", [])), row["baseline"]))
    return out


def _changed(c: dict[str, Any]) -> str:
    """Which questions' recall differed after the add-then-forget cycle (their index in the question file)."""
    changed = c.get("changed_questions", {})
    return "; ".join(f"{k} of question {', '.join(map(str, v))} (0-based)" for k, v in changed.items() if v) or "?"


def _recall(r: dict[str, float]) -> str:
    return "/".join(f"{r[f'R@{k}']:.1f}" for k in (2, 5, 10))


def _pair(p: dict[str, Any] | None) -> str:
    return f"{p['p50']:.0f}/{p['p95']:.0f}" if p and p.get("p50") is not None else "-"


def table(results: dict[str, Any]) -> str:
    """Markdown: latency, recall and memory per size (and baseline); where the time goes; how the stores were built."""
    head = ("| scenes | settings | resonate p50/p95 ms | probe p50/p95 ms | full p50/p95 ms | full p50 vs smallest | "
            "full CPU p50/p95 ms | "
            "R@2/5/10 | graph build s | graph +1,000 s | peak RSS query MB | disk MB | load |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    first: dict[str, float] = {}
    stages = ["| scenes | settings | " + " | ".join(Stages.NAMES) + " |", "|" + "---|" * (len(Stages.NAMES) + 2)]
    for size, row in results["sizes"].items():
        for label, q in _configs(row, results):
            if "latency_ms" not in q:
                lines.append(f"| {int(size):,} | {label} | {q.get('error') or row.get('build', {}).get('aborted', '-')} |")
                continue
            lat = q["latency_ms"]
            first.setdefault(label, lat["full"]["p50"])
            lines.append(
                f"| {q['scenes']:,} | {label} | {lat['resonate']['p50']:.0f}/{lat['resonate']['p95']:.0f} | "
                f"{lat['probe']['p50']:.0f}/{lat['probe']['p95']:.0f} | {lat['full']['p50']:.0f}/{lat['full']['p95']:.0f} | "
                f"{lat['full']['p50'] / first[label]:.2f}x | {_pair(lat.get('full_cpu'))} | "
                f"{q['recall']['R@2']:.1f}/{q['recall']['R@5']:.1f}/{q['recall']['R@10']:.1f} | "
                f"{q['graph_build_s']:.1f} | {q['graph_update_1000_s']:.2f} | {q['peak_rss_mb']:,} | "
                f"{q['disk_mb']['total']:,.0f} | {q['load'][0]}-{q['load'][1]} |")
            stages.append(f"| {q['scenes']:,} | {label} | "
                          + " | ".join(f"{q['stages_ms_mean'][n]:.0f}" for n in Stages.NAMES) + " |")
    builds = ["| scenes | Chroma s | keys s | couplings s | scenes/s written | peak RSS MB | disk Chroma / couplings MB | "
              "HNSW ef_construction / M | load |", "|---|---|---|---|---|---|---|---|---|"]
    for size, row in results["sizes"].items():
        b = row.get("build", {})
        if "seconds" in b:
            sec, h = b["seconds"], row.get("hnsw") or {}
            scenes = f"{b['scenes']:,}" + (f" of {int(size):,} (stopped; resumable)" if b.get("partial") else "")
            builds.append(f"| {scenes} | {sec['store']:.0f} | {sec['keys']:.0f} | {sec['couplings']:.0f} | "
                          f"{b['write_per_s']:.0f} | {b['peak_rss_mb']:,} | {b['disk_mb']['chroma']:,.0f} / "
                          f"{b['disk_mb']['couplings']:,.0f} | {h.get('ef_construction', '?')} / "
                          f"{h.get('max_neighbors', '?')} | {b['load'][0]}-{b['load'][1]} |")
        elif b:
            builds.append(f"| {int(size):,} | {b.get('aborted') or b.get('error')} |")
    out = (lines + ["", "Mean ms per question in each stage (summed over the question's resonances):", ""]
           + stages + ["", "Bulk build (precomputed vectors):", ""] + builds)
    reals = []
    for size, row in results["sizes"].items():
        r, q = row.get("real", {}), row.get("query_real", {})
        if "seconds" in r:
            lat, cos = q.get("latency_ms", {}), r.get("summed_vs_real_cosine", {})
            recall = _recall(q["recall"]) if "recall" in q else "-"
            reals.append(f"| {r['scenes']:,} | {r['wall_s']:.0f} | {r['seconds']['embed']:.0f} | "
                         f"{r['seconds']['else']:.0f} ({100 * r['seconds']['else'] / max(r['wall_s'], 1e-9):.0f}%) | "
                         f"{r['scenes_per_s']:.1f} | {r['peak_rss_mb']:,} | {cos.get('mean')} / {cos.get('p5')} | "
                         f"{_pair(lat.get('full'))} | {recall} | {r['load'][0]}-{r['load'][1]} |")
    if reals:
        out += ["", "Ordinary ingest (`Memory.ingest` of the first scenes, the embedder timed apart), and the questions on "
                "that memory of real vectors:", "",
                "| scenes | wall s | embedding s | everything else s | scenes/s | peak RSS MB | "
                "summed vs real vector cosine mean / p5 | full p50/p95 ms | R@2/5/10 | load |",
                "|---|---|---|---|---|---|---|---|---|---|"] + reals
    return "\n".join(out)


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(r["query"]["scenes"], r) for r in results["sizes"].values() if "latency_ms" in r.get("query", {})]
    if not rows:
        return
    sizes = [s for s, _ in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for name, colour in (("resonate", "tab:blue"), ("probe", "tab:orange"), ("full", "tab:green")):
        ax1.plot(sizes, [r["query"]["latency_ms"][name]["p50"] for _, r in rows], "o-", color=colour,
                 label=f"{name} p50")
        ax1.plot(sizes, [r["query"]["latency_ms"][name]["p95"] for _, r in rows], "x:", color=colour, alpha=0.6,
                 label=f"{name} p95")
    base = [(s, r["baseline"]) for s, r in rows if "latency_ms" in r.get("baseline", {})]
    if base:
        ax1.plot([s for s, _ in base], [b["latency_ms"]["full"]["p50"] for _, b in base], "s--", color="tab:red",
                 label="full p50, " + " ".join(results.get("baseline", [])))
    ax1.set_xscale("log")
    ax1.set_yscale("log")
    ax1.set_xlabel("scenes in memory")
    ax1.set_ylabel("ms")
    ax1.set_title("retrieval latency (" + (" ".join(results.get("settings") or []) or "defaults") + ")")
    ax1.legend(fontsize=7)
    ax2.plot(sizes, [r["query"]["peak_rss_mb"] / 1024 for _, r in rows], "o-", label="peak RSS, query process")
    ax2.plot(sizes, [r["build"]["peak_rss_mb"] / 1024 for _, r in rows], "s-", label="peak RSS, bulk build")
    ax2.plot(sizes, [r["query"]["disk_mb"]["total"] / 1024 for _, r in rows], "^-", label="disk (Chroma + couplings)")
    ax2.axhline(6, color="grey", linestyle=":", label="6 GB target (RSS)")
    ax2.set_xscale("log")
    ax2.set_xlabel("scenes in memory")
    ax2.set_ylabel("GiB")
    ax2.set_title("memory and disk")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"plot: {path}", file=sys.stderr)


def verdicts(results: dict[str, Any]) -> list[str]:
    """The issue's targets against what was measured (full-retrieval p50 growth; peak RSS of the largest store)."""
    rows = sorted(((r["query"]["scenes"], r) for r in results["sizes"].values() if "latency_ms" in r.get("query", {})),
                  key=lambda pair: pair[0])
    if not rows:
        return []
    (n0, r0), out = rows[0], []
    for n, r in rows[1:]:
        ratio = r["query"]["latency_ms"]["full"]["p50"] / r0["query"]["latency_ms"]["full"]["p50"]
        limit = 1.5 if n <= 10 * n0 else 3.0
        line = (f"full-retrieval p50 {n0:,} -> {n:,} scenes: {ratio:.2f}x wall (target <= {limit}x at "
                f"{'10x' if limit == 1.5 else '100x'} the scenes)")
        if n in (10 * n0, 100 * n0):
            line += f": {'met' if ratio <= limit else 'missed'}"
        else:  # a stopped build: the target's size was not reached, so no verdict
            line += f": not judged, {n / n0:.0f}x the scenes only"
        c0, c1 = r0["query"]["latency_ms"].get("full_cpu"), r["query"]["latency_ms"].get("full_cpu")
        if c0 and c1 and c0.get("p50") and c1.get("p50"):
            line += f"; CPU time per question {c1['p50'] / c0['p50']:.2f}x"
        out.append(line)
    n, r = rows[-1]
    rss = max(r["query"]["peak_rss_mb"], r.get("build", {}).get("peak_rss_mb", 0))
    out.append(f"peak RSS at {n:,} scenes: {rss / 1024:.1f} GiB, the larger of the build and the query process "
               "(target <= 6 GB at 1M)")
    return out


def record(results: dict[str, Any], args: argparse.Namespace) -> None:
    from evals.results import replace_section

    flags = f"--sizes {' '.join(str(s) for s in sorted(args.sizes))} --questions {args.questions}"
    flags += "".join(f" {name} {' '.join(v)}" for name, v in (("--set", args.set), ("--baseline", args.baseline)) if v)
    flags += f" --baseline-max {args.baseline_max}" if args.baseline and args.baseline_max else ""
    flags += " --measure-only" if args.measure_only else ""
    flags += f" --real-ingest {args.real_ingest} --churn {args.churn}"
    flags += ' --note "..."' if args.note else ""
    churn = [r["churn"] for r in results["sizes"].values() if "added" in r.get("churn", {})]
    lines = [f"Command: `nice -n 10 python -m evals.scale {flags} --record` "
             f"(run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; stores and finished measurements cached "
             "under evals/.scale).", "", table(results), ""]
    lines += [f"- {v}" for v in verdicts(results)]
    for c in churn:
        lines.append(
            f"- add {c['scenes_changed']:,} scenes to the {c['size']:,} memory (`Memory.ingest`, embedding included): "
            f"{c['add_s']:.1f} s + graph catch-up {c['add_graph_catch_up_s']:.2f} s = {c['add_vs_embed']:.2f}x the "
            f"{c['embed_only_s']:.1f} s the embedder alone takes for them; forget them (`Memory.forget`): "
            f"{c['forget_s']:.1f} s + {c['forget_graph_catch_up_s']:.2f} s = {c['forget_vs_embed']:.2f}x (target <= 2x "
            f"each); recall R@2/5/10 of the questions before {_recall(c['recall_before'])} and after "
            f"{_recall(c['recall_after'])}, "
            f"per question {'identical' if c['same_per_question'] else 'different: ' + _changed(c)} "
            f"(load {c['load'][0]}-{c['load'][1]})")
    if args.note:
        lines += ["", args.note]
    lines += ["", f"Plot: `evals/{Path(args.plot).name}`.", "", f"![scale]({Path(args.plot).name})"]
    replace_section(ROOT / "RESULTS.md", "Scale", "\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
