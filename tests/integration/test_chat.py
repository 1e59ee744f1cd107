"""`scenemind chat --thread ID`: durable threads in a SQLite checkpointer, across real process restarts.

A chat process is SIGKILLed mid-turn; a new process on the same thread resumes
that turn from its last checkpoint and ends as an uninterrupted run ends, then
continues the thread with the field and active scenes carried over, and with
probes and the retrieval budget counted per turn.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from agent_servers import SCENEMIND, clean_env, copy_store
from scenemind_data import DEMO_QUESTION
from state.context import Context

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # real servers / processes: `-m "not slow"` skips them
FOLLOW_UP = "When was the director of the film The Goose Woman born?"


def chat(data_dir: Path, thread: str, *questions: str, timeout: float = 240) -> list[dict]:
    run = subprocess.run([SCENEMIND, "--data-dir", str(data_dir), "chat", "--thread", thread, "--json", *questions],
                         capture_output=True, text=True, timeout=timeout, env=clean_env(), stdin=subprocess.DEVNULL)
    assert run.returncode == 0, run.stderr[-3000:]
    return [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]


def test_chat_thread_survives_kill_and_restart(demo_store, tmp_path):
    from graph import graph

    data_dir = copy_store(demo_store, tmp_path / "chat_store")
    expected_dir = copy_store(demo_store, tmp_path / "expected_store")
    expected = graph.invoke({"question": DEMO_QUESTION}, context=Context(data_dir=str(expected_dir)))

    # 1. A chat killed with SIGKILL once resonance has run: the turn is left half done.
    proc = subprocess.Popen([SCENEMIND, "--data-dir", str(data_dir), "chat", "--thread", "t1", DEMO_QUESTION],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=clean_env(),
                            stdin=subprocess.DEVNULL, start_new_session=True)
    seen = []
    try:
        for line in proc.stdout:
            seen.append(line)
            if line.startswith("[resonate]"):
                os.killpg(proc.pid, signal.SIGKILL)
                break
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "".join(seen)[-3000:]
    assert not any(line.startswith("answer:") for line in seen)

    # 2. A new process on the same thread first finishes that turn from its last checkpoint, then goes on
    #    with the conversation: what woke before is still active, the new scene is measured against the
    #    last field, and probes and the retrieval budget are the new turn's own.
    started = time.monotonic()
    resumed, second = chat(data_dir, "t1", FOLLOW_UP)
    print(f"\nresume + next turn took {time.monotonic() - started:.1f}s; resumed steps {resumed['steps']}")
    assert resumed["resumed"] and resumed["question"] == DEMO_QUESTION
    assert resumed["steps"][0] != "interpret" and "build_scene" not in resumed["steps"]  # not redone
    assert resumed["answer"] == expected["answer"] and resumed["citations"] == expected["citations"]

    assert not second["resumed"] and second["question"] == FOLLOW_UP
    assert set(resumed["citations"]) <= set(second["active"])
    assert second["delta"] is not None and second["delta"] < 1.0
    assert set(second["active"]) - set(resumed["active"])  # the new question woke scenes of its own
    # One retrieval for resonance plus one per probe, of this turn only: the counter and the probes restarted.
    assert second["probes"] and not set(second["probes"]) & set(resumed["probes"])
    assert second["retrievals"] == 1 + len(second["probes"]) <= Context().retrieval_budget
    assert resumed["retrievals"] == 1 + len(resumed["probes"])


def test_langgraph_json_serves_a_graph_without_checkpointer():
    from graph import graph

    assert graph.checkpointer is None  # `langgraph dev` brings its own and refuses a custom one
    assert json.loads((Path(__file__).resolve().parents[2] / "langgraph.json").read_text())["graphs"] == {
        "scenemind": "./graph/__init__.py:graph"}
