"""The scale benchmark end to end on a tiny memory: 300 scenes (two MuSiQue questions' paragraphs + synthetic
scenes recombined from 2Wiki sentences), built through the bulk path and measured in child processes."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
DATA = Path(__file__).resolve().parents[1] / "data"


def test_scale_reports_build_latency_memory_and_recall(tmp_path):
    # A pool corpus in the title -> sentences shape, from the 2Wiki slice's own paragraphs.
    pool = {title: sents for q in json.loads((DATA / "2wiki_dev10.json").read_text()) for title, sents in q["context"]}
    (tmp_path / "pool.json").write_text(json.dumps(pool))
    run = subprocess.run(
        [sys.executable, "-m", "evals.scale", "--sizes", "300", "--question-file", str(DATA / "musique_10.json"),
         "--gold-questions", "2", "--questions", "2", "--pool-corpus", str(tmp_path / "pool.json"),
         "--real-ingest", "300", "--cache", str(tmp_path / "cache"), "--plot", str(tmp_path / "scale.png"), "--json",
         "--ef-construction", "48"],
        capture_output=True, text=True, timeout=600, cwd=Path(__file__).resolve().parents[2],
    )
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    row = report["sizes"]["300"]
    build, query = row["build"], row["query"]
    assert build["scenes"] == query["scenes"] == 300  # 40 paragraphs of two questions + 260 synthetic scenes
    assert set(build["seconds"]) >= {"store", "keys", "couplings", "embed_gold", "embed_pool_once"}
    assert build["write_per_s"] > 0 and build["peak_rss_mb"] > 100 and build["disk_mb"]["total"] > 0
    assert query["questions"] == 2 and query["graph_build_s"] >= 0 and query["graph_update_1000_s"] > 0
    lat = query["latency_ms"]
    assert lat["full"]["n"] == 2 and lat["resonate"]["n"] == 2 and lat["probe"]["n"] >= 1
    assert 0 < lat["resonate"]["p50"] <= lat["full"]["p50"] <= lat["full"]["p95"]
    assert set(query["stages_ms_p50"]) >= {"store_query", "bm25", "spread", "scene_reads"}
    assert query["stages_ms_mean"]["store_query"] > 0
    assert 0 < query["recall"]["R@2"] <= query["recall"]["R@5"] <= query["recall"]["R@10"] <= 100
    assert query["peak_rss_mb"] > 100 and query["disk_mb"]["chroma"] > 0 and query["disk_mb"]["couplings"] > 0
    assert (tmp_path / "scale.png").stat().st_size > 0
    assert "| 300 |" in run.stdout  # the table
    # the store was created with the asked HNSW construction (query-side settings unchanged), and says so
    assert row["hnsw"] == build["hnsw"] == {"ef_construction": 48, "max_neighbors": 32, "ef_search": 128}
    assert "| 48 / 32 |" in run.stdout
    # the same 300 scenes through the ordinary ingest: embedding timed apart from everything else, and its table row
    real = row["real"]
    assert real["scenes"] == 300 and real["seconds"]["embed"] > 0 and real["seconds"]["else"] > 0
    assert abs(real["seconds"]["embed"] + real["seconds"]["else"] - real["wall_s"]) < 0.2
    assert row["query_real"]["scenes"] == 300 and row["query_real"]["latency_ms"]["full"]["n"] == 2
    assert "Ordinary ingest" in run.stdout and f"| 300 | {real['wall_s']:.0f} | {real['seconds']['embed']:.0f} |" in run.stdout
