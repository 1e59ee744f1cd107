"""Chat threads in PostgreSQL (`--state-url`): a thread begun by one process is continued by another.

The two `scenemind chat` processes run on two different data dirs and share only the servers, as
processes on two machines would: the scenes in a Chroma server (`chroma run`), the couplings and
the thread in a PostgreSQL database. Both are real servers started and stopped by the tests. A
database that is down, or a URL that is not PostgreSQL's, is one line and exit 2.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from adapters.sources import read_sources
from agent_servers import SCENEMIND, chroma, clean_env, free_port
from pg_server import start_postgres
from scenemind_data import DEMO_QUESTION, DEMO_SCENES

pytestmark = pytest.mark.integration
FOLLOW_UP = "When was Luis Mandoki born?"
NEEDED = {"Gaby: A True Story", "Luis Mandoki"}


def chat(data_dir: Path, shared: tuple[str, ...], thread: str, *questions: str) -> dict:
    run = subprocess.run([SCENEMIND, "--data-dir", str(data_dir), *shared, "chat", "--thread", thread, "--json",
                          *questions], capture_output=True, text=True, timeout=300, env=clean_env(),
                         stdin=subprocess.DEVNULL)
    assert run.returncode == 0, run.stderr[-3000:]
    turns = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    assert len(turns) == len(questions), run.stdout[-3000:]
    return turns[-1]


def small_corpus(folder: Path) -> Path:
    """The two passages the demo question needs, and 18 others: enough for a thread, quick to embed."""
    records = read_sources([str(DEMO_SCENES)])
    keep = [r for r in records if r.title in NEEDED] + [r for r in records if r.title not in NEEDED][:18]
    path = folder / "scenes.jsonl"
    path.write_text("".join(json.dumps({"title": r.title, "text": r.text}) + "\n" for r in keep))
    return path


@pytest.mark.slow
def test_a_thread_begun_on_one_machine_is_continued_on_another(pg_url, tmp_path):
    from graph.chat_cli import thread_graph

    store = chroma(tmp_path / "chroma_data", tmp_path)
    try:
        shared = ("--store-url", store.url, "--state-url", pg_url)
        here, there = tmp_path / "machine-a", tmp_path / "machine-b"
        ingest = subprocess.run([SCENEMIND, "--data-dir", str(here), *shared, "ingest", "--quiet",
                                 str(small_corpus(tmp_path))], capture_output=True, text=True, timeout=300,
                                env=clean_env())
        assert ingest.returncode == 0 and "20 added" in ingest.stdout, ingest.stderr[-3000:]
        first = chat(here, shared, "t1", DEMO_QUESTION)
        assert first["answer"] == "Mexico City" and first["delta"] == 1.0  # a new thread: nothing to compare with

        second = chat(there, shared, "t1", FOLLOW_UP)  # never ingested, shares no folder with the first
    finally:
        store.stop()
    # The second process loaded the first turn: its scenes are still active and the new scene's delta is
    # measured against the field the first turn settled on.
    assert not second["resumed"] and second["question"] == FOLLOW_UP
    assert second["answer"] == "August 17, 1954"
    assert set(first["citations"]) <= set(second["active"])
    assert second["delta"] is not None and second["delta"] < 1.0
    for folder in (here, there):  # nothing of the thread (or the memory) is in either folder
        assert not [p.name for p in folder.glob("*") if p.name.startswith(("threads", "couplings", "chroma"))]

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
                                                       " cannot be reached"),
    ("postgresql://postgres:s3cret@127.0.0.1:{port}/threads", "postgres:***@127.0.0.1:{port}/threads"),
    ("postgresql://postgres@127.0.0.1:notaport/threads", "cannot be reached"),
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


class StopsTheServer(io.StringIO):
    """stdin whose first line arrives just after the PostgreSQL server was stopped: a server lost mid-conversation."""

    def __init__(self, server, text: str):
        super().__init__(text)
        self.server = server

    def readline(self, *args) -> str:
        self.server.stop()
        return super().readline(*args)


def test_a_database_lost_mid_conversation_is_one_line(tmp_path, capsys, monkeypatch):
    server = start_postgres()
    try:
        url = server.new_database("threads")
        monkeypatch.setattr(sys, "stdin", StopsTheServer(server, "Who directed Gaby: A True Story?\n"))
        code, err = run_cli(capsys, "--data-dir", str(tmp_path), "--state-url", url, "chat", "--thread", "t")
    finally:
        server.stop()
    assert code == 2
    assert f"PostgreSQL at {url} stopped answering while keeping the chat thread" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
