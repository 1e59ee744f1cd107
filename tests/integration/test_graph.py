"""The compiled graph against a real Chroma store and the real embedder."""

import subprocess
import sys

import pytest

from adapters.embedder import DEFAULT_EMBEDDER
from adapters.memory import open_memory
from adapters.sources import read_sources
from graph import graph
from scenemind_data import DEMO_QUESTION, DEMO_SCENES
from state.context import Context
from state.errors import EmptyInput, InputTooLarge, SceneFileError

pytestmark = pytest.mark.integration
NODES = {"interpret", "build_scene", "resonate", "expand", "probe", "formulate", "decode", "crystallize"}


def stream_run(ctx: Context) -> tuple[list[str], list[dict], dict]:
    seen, events, final = [], [], {}
    for mode, chunk in graph.stream({"question": DEMO_QUESTION}, context=ctx,
                                    stream_mode=["updates", "custom", "values"]):
        if mode == "updates":
            seen.extend(chunk)
        elif mode == "custom":
            events.append(chunk)
        else:
            final = chunk
    return seen, events, final


def test_stream_shows_every_node_and_probes_at_depth(demo_store, tmp_path):
    import shutil

    # Its own copy: the second run writes back, so that the recurring field crystallises.
    data_dir = shutil.copytree(demo_store, tmp_path / "store", ignore=shutil.ignore_patterns("threads.sqlite*"))
    ctx = Context(data_dir=str(data_dir), write_back=True)
    seen, events, final = stream_run(ctx)
    assert NODES <= set(seen)
    assert seen[:3] == ["interpret", "build_scene", "resonate"] and seen[-1] == "crystallize"
    assert final["answer"] and final["citations"]
    assert final["retrievals"] <= ctx.retrieval_budget
    assert max(p.depth for p in final["probes"]) <= ctx.max_depth
    kinds = [e["event"] for e in events]
    # woke (resonance), probes, one woke per probe, resolved, formulas: in that order; no recurrence yet.
    assert kinds[:2] == ["woke", "probes"] and kinds[-2:] == ["resolved", "formulas"] and "crystal" not in kinds
    titles = {r.id: r.title for r in final["active"].values()}

    woke = events[0]
    assert woke["depth"] == 0 and "gaby a true story" in woke["entities"]
    assert len(woke["scenes"]) == ctx.top_k and woke["scenes"][0]["title"] == "Gaby: A True Story"
    assert "Luis Mandoki" in [s["title"] for s in woke["scenes"]]
    assert [s["score"] for s in woke["scenes"]] == sorted((s["score"] for s in woke["scenes"]), reverse=True)
    assert all(titles[s["id"]] == s["title"] for s in woke["scenes"])

    probes = events[1]
    assert probes["depth"] == 1 and 0 < len(probes["probes"]) <= ctx.max_probes
    assert [p["id"] for p in probes["probes"]] == [p.id for p in final["probes"]]
    bridge = next(p for p in probes["probes"] if p["target"] == "luis mandoki")
    assert bridge["reason"] == "bridge" and bridge["parent_title"] == "Gaby: A True Story"
    assert bridge["parent"] == woke["scenes"][0]["id"] and bridge["text"].endswith("luis mandoki")

    per_probe = [e for e in events if e["event"] == "woke" and e["depth"] == 1]
    assert sorted(e["probe"] for e in per_probe) == sorted(p["id"] for p in probes["probes"])
    mandoki = next(e for e in per_probe if e["probe"] == bridge["id"])
    assert mandoki["target"] == "luis mandoki" and "Luis Mandoki" in [s["title"] for s in mandoki["scenes"][:2]]
    assert events[-2] == {"event": "resolved", "depth": 1, "reason": "max depth 1 reached"}

    formulas = events[-1]["formulas"]
    assert [f["id"] for f in formulas] == [f.id for f in final["formulas"]]
    chain = [c["title"] for c in formulas[0]["chain"]]
    assert chain[:2] == ["Gaby: A True Story", "Luis Mandoki"] and "luis mandoki" in formulas[0]["via"]
    assert [c["id"] for c in formulas[0]["chain"]] == final["formulas"][0].chain

    # The same question again: its field recurs, and the crystal event names the crystal the run returns.
    _, again, second = stream_run(ctx)
    crystal = again[-1]
    assert crystal == {"event": "crystal", "id": second["crystals"][0].id, "label": DEMO_QUESTION, "count": 2}


def test_two_hop_question_answers_with_its_chain_of_evidence(demo_context):
    out = graph.invoke({"question": DEMO_QUESTION}, context=demo_context)
    assert out["answer"] == "Mexico City"
    # The chain in hop order: the film names its director, the director's scene holds the birthplace.
    assert [(e.title, e.role) for e in out["evidence"]] == [("Gaby: A True Story", "bridge"),
                                                            ("Luis Mandoki", "answer")]
    assert "Luis Mandoki" in out["evidence"][0].text and "Mexico City" in out["evidence"][1].text
    assert out["citations"] == [e.scene_id for e in out["evidence"]]


def test_second_two_hop_question(demo_context):
    out = graph.invoke({"question": "When was the director of the film The Goose Woman born?"}, context=demo_context)
    assert {"The Goose Woman", "Clarence Brown"} <= {e.title for e in out["evidence"]}
    assert out["answer"] == "May 10, 1890"  # the first date of "(May 10, 1890 – August 17, 1987)"


def test_formulas_are_written_back_and_recurring_field_crystallises(demo_store, tmp_path):
    import shutil

    # A copy of the demo store (it holds no formulas, fields or crystals: conftest checks that it stays so).
    data_dir = str(shutil.copytree(demo_store, tmp_path / "store", ignore=shutil.ignore_patterns("threads.sqlite*")))
    mem = open_memory(data_dir, DEFAULT_EMBEDDER)
    # Asking is read-only by default: formulas are formed, fields and crystals computed, nothing stored.
    read_only = graph.invoke({"question": DEMO_QUESTION}, context=Context(data_dir=data_dir))
    assert read_only["formulas"] and read_only["crystals"] == []
    assert [mem.store.count(kind) for kind in ("formulas", "fields", "crystals")] == [0, 0, 0]
    ctx = Context(data_dir=data_dir, write_back=True)
    first = graph.invoke({"question": DEMO_QUESTION}, context=ctx)
    assert first["formulas"] and mem.store.count("formulas") >= 1
    assert first["crystals"] == [] and mem.store.count("crystals") == 0
    second = graph.invoke({"question": DEMO_QUESTION}, context=ctx)
    assert len(second["crystals"]) == 1 and second["crystals"][0].count == 2
    third = graph.invoke({"question": DEMO_QUESTION}, context=ctx)
    assert third["crystals"][0].id == second["crystals"][0].id and third["crystals"][0].count == 3
    assert mem.store.count("crystals") == 1


def test_ingesting_twice_adds_nothing(demo_store):
    mem = open_memory(demo_store, DEFAULT_EMBEDDER)
    before = mem.stats()
    report = mem.ingest(read_sources([str(DEMO_SCENES)]))
    assert report.added == 0 and report.already_present == 300
    assert mem.stats()["scenes"] == before["scenes"] == 300
    assert mem.stats()["couplings"] == before["couplings"]


@pytest.mark.parametrize("question,error", [("", EmptyInput), ("  \n ", EmptyInput), ("x" * 1_000_000, InputTooLarge)])
def test_bad_questions_raise_domain_errors(demo_context, question, error):
    with pytest.raises(error):
        graph.invoke({"question": question}, context=demo_context)


def test_bad_ingest_file_writes_nothing_and_cli_names_the_line(tmp_path, demo_store):
    bad = tmp_path / "scenes.jsonl"
    bad.write_bytes(b'{"text": "A perfectly fine new scene about Zanzibar."}\n{"text": "broken\n')
    data_dir = tmp_path / "fresh"
    run = subprocess.run([sys.executable, "-m", "graph.cli", "--data-dir", str(data_dir), "ingest", str(bad)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert f"{bad}:2: broken JSON" in run.stderr and "Traceback" not in run.stderr
    assert not data_dir.exists()  # nothing was written, not even the good line
    with pytest.raises(SceneFileError):
        read_sources([str(bad)])


def test_cli_empty_question_is_one_clear_line(demo_store):
    run = subprocess.run([sys.executable, "-m", "graph.cli", "--data-dir", demo_store, "ask", "   "],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "question is empty" in run.stderr and "Traceback" not in run.stderr


def test_cli_ask_json(demo_store):
    import json

    run = subprocess.run([sys.executable, "-m", "graph.cli", "--data-dir", demo_store, "ask", "--json", DEMO_QUESTION],
                         capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["answer"] == "Mexico City"
    assert {c["title"] for c in out["citations"]} >= {"Gaby: A True Story", "Luis Mandoki"}
    assert [e["title"] for e in out["evidence"]] == ["Gaby: A True Story", "Luis Mandoki"]
    assert all(set(e) >= {"scene_id", "title", "text", "hop", "role"} for e in out["evidence"])
    assert set(out["timings_s"]) >= {"interpret", "resonate", "decode"}
