"""Chat threads in PostgreSQL (`--state-url`): a thread begun by one process is continued by another.

The two `scenemind chat` processes run on two different data dirs (copies of one store), so the
only thing they share is the PostgreSQL database that holds the thread: a real server started by
the tests. A server that is down, or a URL that is not PostgreSQL's, is one line and exit 2.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from agent_servers import SCENEMIND, clean_env, copy_store, free_port
from scenemind_data import DEMO_QUESTION

pytestmark = pytest.mark.integration
FOLLOW_UP = "When was the director of the film The Goose Woman born?"


def chat(data_dir: Path, state_url: str, thread: str, *questions: str) -> dict:
    run = subprocess.run([SCENEMIND, "--data-dir", str(data_dir), "--state-url", state_url, "chat", "--thread",
                          thread, "--json", *questions], capture_output=True, text=True, timeout=300,
                         env=clean_env(), stdin=subprocess.DEVNULL)
    assert run.returncode == 0, run.stderr[-3000:]
    turns = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    assert len(turns) == len(questions), run.stdout[-3000:]
    return turns[-1]


@pytest.mark.slow
def test_a_thread_begun_by_one_process_is_continued_by_another(demo_store, pg_url, tmp_path):
    from graph.chat_cli import thread_graph

    here, there = copy_store(demo_store, tmp_path / "here"), copy_store(demo_store, tmp_path / "there")
    first = chat(here, pg_url, "t1", DEMO_QUESTION)
    assert first["answer"] == "Mexico City" and first["delta"] == 1.0  # a new thread: nothing to compare with

    second = chat(there, pg_url, "t1", FOLLOW_UP)
    # The second process loaded the first turn: its scenes are still active and the new scene's delta is
    # measured against the field the first turn settled on.
    assert not second["resumed"] and second["question"] == FOLLOW_UP
    assert set(first["citations"]) <= set(second["active"])
    assert second["delta"] is not None and second["delta"] < 1.0
    assert not (here / "threads.sqlite").exists() and not (there / "threads.sqlite").exists()

    # Anyone reading the database sees both turns in the thread's history, newest first.
    reader = thread_graph(tmp_path / "unused.sqlite", pg_url)
    history = [s.values.get("question") for s in reader.get_state_history({"configurable": {"thread_id": "t1"}})]
    assert history[0] == FOLLOW_UP and DEMO_QUESTION in history
    assert not (tmp_path / "unused.sqlite").exists()
    assert not reader.get_state({"configurable": {"thread_id": "t2"}}).values  # another thread starts empty


def run_cli(capsys, *argv: str) -> tuple[int, str]:
    from graph.cli import main

    code = main(list(argv))
    return code, capsys.readouterr().err


@pytest.mark.parametrize("url, says", [
    ("postgresql://postgres@127.0.0.1:{port}/threads", "PostgreSQL at postgresql://postgres@127.0.0.1:{port}/threads"
                                                       " cannot keep the chat threads"),
    ("postgresql://postgres:s3cret@127.0.0.1:{port}/threads", "postgres:***@127.0.0.1:{port}/threads"),
    ("postgresql://postgres@127.0.0.1:notaport/threads", "cannot keep the chat threads"),
    ("mysql://root@127.0.0.1/threads", "--state-url must be a PostgreSQL URL"),
])
def test_a_database_that_cannot_be_reached_is_one_line(url, says, tmp_path, capsys, monkeypatch):
    port = free_port()  # nothing listens there
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    code, err = run_cli(capsys, "--data-dir", str(tmp_path), "--state-url", url.format(port=port), "chat",
                        "--thread", "t", "Who?")
    assert code == 2
    assert says.format(port=port) in err and "s3cret" not in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
