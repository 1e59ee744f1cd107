"""README promises that no other test held the code to, each checked against real parts.

Files and ingest checks, the couplings index's WAL mode with readers in other
processes, the probe settings, the openai: decoder's key and timeout against real
HTTP servers on 127.0.0.1, the QLoRA recipe and the training loss's target, and
the `Context` fields in the graph's context schema.
"""

from __future__ import annotations

import dataclasses
import http.server
import json
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from adapters.sources import CHUNK_CHARS, read_sources
from graph.cli import main as cli_main
from scenemind_data import DEMO_QUESTION, DEMO_SCENES
from state.context import Context

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
SENTENCE = "Rome was founded on seven hills beside the Tiber, and it grew for a thousand years. "


# ---------- ingest formats and checks ----------

def test_txt_is_packed_into_scenes_of_about_1000_characters_titled_by_headings(tmp_path):
    f = tmp_path / "history.txt"
    short = [(f"Paragraph {n}. " + SENTENCE * 2).strip() for n in range(6)]  # ~190 characters each
    long = SENTENCE * 30  # one paragraph of ~2,600 characters
    f.write_text("\n\n".join(short[:3]) + "\n\n# Carthage\n\n" + "\n\n".join(short[3:]) + "\n\n" + long + "\n")
    scenes = read_sources([str(f)])
    # Before any heading a scene is titled by the file; a heading titles what follows it.
    assert [s.title for s in scenes] == ["history"] + ["Carthage"] * (len(scenes) - 1)
    assert scenes[0].text == "\n".join(short[:3])  # short paragraphs share a scene
    assert all(len(s.text) <= CHUNK_CHARS for s in scenes) and CHUNK_CHARS == 1_000
    # The long paragraph is cut at sentence ends into pieces near the bound, and nothing is lost.
    pieces = [s.text for s in scenes if SENTENCE.strip() in s.text and "Paragraph" not in s.text]
    assert len(pieces) >= 2 and all(p.endswith(".") and len(p) > 500 for p in pieces)
    assert " ".join(" ".join(s.text.split()) for s in scenes).count("Tiber") == 6 * 2 + 30


def test_each_bad_line_of_a_file_is_named_and_nothing_is_written(tmp_path, capsys):
    f = tmp_path / "scenes.jsonl"
    f.write_bytes(b'{"text": "A fine scene about Zanzibar."}\n'
                  b'{"text": "broken\n'
                  b'{"text": "Another fine scene."}\n'
                  b'{"title": "no text here"}\n'
                  b'{"text": "caf\xe9"}\n')
    data_dir = tmp_path / "store"
    code = cli_main(["--data-dir", str(data_dir), "ingest", str(f)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    for line, reason in ((2, "broken JSON"), (4, "record has no non-empty \"text\""), (5, "invalid UTF-8")):
        assert f"{f}:{line}: {reason}" in err, (line, err)
    assert f"{f}:1" not in err and f"{f}:3" not in err and "Nothing was ingested" in err
    assert not data_dir.exists()


# ---------- the couplings index: WAL, readers in other processes ----------

READER = """
import sys, time
from adapters.coupling_index import CouplingIndex
start = time.monotonic()
print(CouplingIndex(sys.argv[1], writable=False).count()[0], round(time.monotonic() - start, 2))
"""


def test_couplings_index_is_wal_and_other_processes_read_during_a_write(tmp_path, embedder):
    from adapters.memory import Memory

    data_dir = tmp_path / "store"
    records = read_sources([str(DEMO_SCENES)])[:12]
    Memory(str(data_dir), embedder, create=True).ingest(records)
    index = data_dir / "couplings.sqlite"
    writer = sqlite3.connect(str(index), timeout=1, isolation_level=None)
    assert writer.execute("PRAGMA journal_mode").fetchone()[0] == "wal"

    def read_in_other_processes() -> list[tuple[int, float]]:
        procs = [subprocess.Popen([sys.executable, "-c", READER, str(index)], cwd=str(ROOT), text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
        out = []
        for p in procs:
            stdout, stderr = p.communicate(timeout=120)
            assert p.returncode == 0, stderr[-2000:]
            count, took = stdout.split()
            out.append((int(count), float(took)))
        return out

    # A writer holds the database exclusively, mid-transaction (as an ingest's commit does): readers in
    # other processes neither wait nor fail, and see the last committed state.
    writer.execute("BEGIN EXCLUSIVE")
    writer.execute("DELETE FROM scene_key WHERE scene = (SELECT MIN(n) FROM scene)")
    writer.execute("DELETE FROM scene WHERE n = (SELECT MIN(n) FROM scene)")
    try:
        during = read_in_other_processes()
    finally:
        writer.execute("COMMIT")
    assert [count for count, _ in during] == [12, 12] and all(took < 5 for _, took in during)
    assert [count for count, _ in read_in_other_processes()] == [11, 11]  # the commit is seen at once
    writer.close()


# ---------- probe settings ----------

def probe_events(ctx: Context) -> tuple[dict, list[dict]]:
    from graph import graph

    events, final = [], {}
    for mode, chunk in graph.stream({"question": DEMO_QUESTION}, context=ctx, stream_mode=["custom", "values"]):
        if mode == "custom":
            events.append(chunk)
        else:
            final = chunk
    return final, events


def test_composed_probe_vectors_and_residual_probes(demo_store):
    text_out, text_events = probe_events(Context(data_dir=demo_store))
    composed_out, composed_events = probe_events(Context(data_dir=demo_store, probe_vectors="compose"))

    def woke_by(events: list[dict], target: str) -> list[tuple[str, float]]:
        event = next(e for e in events if e["event"] == "woke" and e.get("target") == target)
        return [(s["title"], s["score"]) for s in event["scenes"]]

    # The same bridge probe, another vector: "question + bridge" embedded, or the question's vector plus
    # the bridge entity's. Both reach the director; their scores differ, so the setting is used.
    assert [p.target for p in composed_out["probes"]] == [p.target for p in text_out["probes"]]
    composed = woke_by(composed_events, "luis mandoki")
    assert "Luis Mandoki" in [title for title, _ in composed[:2]]
    assert composed != woke_by(text_events, "luis mandoki")
    assert composed_out["answer"] == text_out["answer"] == "Mexico City"

    # The residual probe takes a place the bridges leave free (max_probes bounds them all).
    residual_out, residual_events = probe_events(Context(data_dir=demo_store, residual_probes=True, max_probes=8))
    residual = [p for p in residual_out["probes"] if p.reason == "residual"]
    assert len(residual) == 1 and residual[0].depth == 1 and residual[0].parent
    assert [p.target for p in residual_out["probes"] if p.reason == "bridge"] == [p.target for p in text_out["probes"]]
    assert not [p for p in text_out["probes"] if p.reason == "residual"]
    planned = next(e for e in residual_events if e["event"] == "probes")["probes"]
    assert "residual" in [p["reason"] for p in planned]
    assert any(e["event"] == "woke" and e.get("probe") == residual[0].id for e in residual_events)


# ---------- the openai: decoder: key and timeout ----------

class Recording(http.server.BaseHTTPRequestHandler):
    """A minimal OpenAI-compatible endpoint that records each request's Authorization header."""

    seen: list[tuple[str, str]] = []
    delay_s = 0.0

    def _json(self, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802
        type(self).seen.append((self.path, self.headers.get("Authorization", "")))
        self._json({"object": "list", "data": [{"id": "m", "object": "model", "created": 0, "owned_by": "x"}]})

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        type(self).seen.append((self.path, self.headers.get("Authorization", "")))
        time.sleep(type(self).delay_s)
        try:
            self._json({"id": "c", "object": "chat.completion", "created": 0, "model": "m",
                        "choices": [{"index": 0, "finish_reason": "stop",
                                     "message": {"role": "assistant", "content": "Answer: Mexico City [c3d4]"}}]})
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def endpoint():
    Recording.seen, Recording.delay_s = [], 0.0
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recording)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def recalled():
    from state.models import Recalled

    return [Recalled(id="a1b2", text="Gaby: A True Story is a 1987 film directed by Luis Mandoki.", title="Gaby"),
            Recalled(id="c3d4", text="Luis Mandoki is a Mexican director born in Mexico City.", title="Luis Mandoki")]


def test_decoder_key_comes_from_scenemind_then_openai_env(endpoint, monkeypatch):
    from adapters.decoders import ChatDecoder, openai_chat

    monkeypatch.delenv("SCENEMIND_DECODER_API_KEY", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai")
    decoded = ChatDecoder(openai_chat(endpoint, "", 8, 10), "openai").decode("q?", np.zeros(3), recalled(), [])
    assert decoded.answer == "Mexico City" and decoded.citations == ["c3d4"]
    monkeypatch.setenv("SCENEMIND_DECODER_API_KEY", "sk-scenemind")  # scenemind's own wins over OpenAI's
    ChatDecoder(openai_chat(endpoint, "", 8, 10), "openai").decode("q?", np.zeros(3), recalled(), [])
    assert Recording.seen == [("/v1/models", "Bearer sk-openai"), ("/v1/chat/completions", "Bearer sk-openai"),
                              ("/v1/models", "Bearer sk-scenemind"), ("/v1/chat/completions", "Bearer sk-scenemind")]


def test_an_endpoint_that_does_not_answer_in_time_is_decoder_unavailable(endpoint):
    from adapters.decoders import ChatDecoder, openai_chat
    from state.errors import DecoderUnavailable

    Recording.delay_s = 5.0
    started = time.monotonic()
    with pytest.raises(DecoderUnavailable, match="did not answer in time: raise decoder_timeout_s"):
        ChatDecoder(openai_chat(endpoint, "m", 8, 1.0), "openai").decode("q?", np.zeros(3), recalled(), [])
    assert time.monotonic() - started < 4  # cut at decoder_timeout_s, not when the server would answer


# ---------- training: the QLoRA recipe, the loss on the answer only ----------

def test_qlora_recipe_is_nf4_double_quantized_in_the_device_dtype():
    import torch

    from adapters.chat_models import compute_dtype, quantization_config

    config = quantization_config("4bit")
    assert config.load_in_4bit and config.bnb_4bit_quant_type == "nf4" and config.bnb_4bit_use_double_quant
    assert config.bnb_4bit_compute_dtype == compute_dtype()
    # bf16 compute on a GPU that has it (the README's recipe), fp16 on older cards, fp32 on the CPU.
    assert compute_dtype(cuda=True, bf16=True) == torch.bfloat16
    assert compute_dtype(cuda=True, bf16=False) == torch.float16 and compute_dtype(cuda=False) == torch.float32


def test_decoder_training_puts_the_loss_on_the_answer_tokens_only(tmp_path):
    from adapters.chat_models import prompt_ids
    from adapters.training import CHAT_TEMPLATE, read_decoder_examples, train_tokenizer
    from adapters.training import encode_example

    texts = [json.loads(line)["text"] for line in Path(DEMO_SCENES).read_text().splitlines()[:100]]
    tokenizer = train_tokenizer(texts, tmp_path / "tok", vocab_size=400, chat_template=CHAT_TEMPLATE)
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"question": "Where was he born?", "scenes": [
        {"id": "c3d4", "text": "Luis Mandoki is a Mexican director born in Mexico City."}],
        "answer": "Mexico City [c3d4]"}) + "\n")
    (example,) = read_decoder_examples(str(data))
    ids, labels = encode_example(tokenizer, example, max_length=1024)
    prompt = prompt_ids(tokenizer, example.messages)  # exactly what the hf: decoder feeds
    answer = tokenizer(" Mexico City [c3d4]", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    assert ids == prompt + answer
    assert labels == [-100] * len(prompt) + answer  # every prompt token is masked out of the loss


# ---------- Studio / langgraph dev: the settings panel ----------

def test_every_context_field_is_in_the_graph_context_schema():
    from graph import graph

    schema = graph.get_context_jsonschema()
    fields = {f.name for f in dataclasses.fields(Context)}
    assert fields == set(schema["properties"])
    assert schema["properties"]["top_k"]["default"] == Context().top_k
    assert schema["properties"]["write_back"]["default"] is False
