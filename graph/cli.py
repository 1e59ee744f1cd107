"""The `scenemind` command: ingest scenes, ask (streaming each step), stats."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

# The offline env vars are set by the `graph` package's __init__, which runs before this module.
from state.context import Context
from state.errors import SceneMindError


def _context(args: argparse.Namespace, **extra: Any) -> Context:
    given = {k: v for k, v in {"data_dir": args.data_dir, "store_url": args.store_url, "state_url": args.state_url,
                                "embedder": args.embedder, **extra}.items() if v is not None}
    if "data_dir" in given:
        given["data_dir"] = os.path.abspath(given["data_dir"])
    return Context(**given)


def cmd_ingest(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from adapters.memory import open_memory
    from adapters.sources import read_sources

    ctx = _context(args)
    records = read_sources(args.paths)  # every file checked before anything is written
    mem = open_memory(ctx.data_dir, ctx.embedder, store_url=ctx.store_url, create=True, state_url=ctx.state_url)
    start = time.perf_counter()
    with tqdm(total=len(records), unit="scene", desc="ingest", file=sys.stderr, disable=args.quiet) as bar:
        report = mem.ingest(records, progress=bar.update, replace_sources=not getattr(args, "add_only", False))
    took = time.perf_counter() - start
    print(f"{report.records} records: {report.added} added, {report.already_present} already present, "
          f"{report.removed} removed (gone from their file) "
          f"-> {report.scenes} scenes, {report.couplings} couplings in {mem.where} ({took:.1f}s)")
    if report.rewritten:
        print(f"  {report.rewritten} of them were stored but their vectors did not read back: written again")
    if report.kept_stored:
        print(f"  {report.kept_stored} ids were already stored with another text: the stored text was kept")
    return 0


def _title(item: Any) -> str:
    return (item.title or item.text[:40]).strip()


def strengths(recalled: list[Any]) -> list[str]:
    """Scores as a person reads them: percent of the strongest scene's score, then the dense cosine."""
    top = max((r.score for r in recalled), default=0.0)
    return [f"{max(0.0, r.score) / top:.0%}, cos {r.dense:.2f}" if top > 0 else f"cos {r.dense:.2f}"
            for r in recalled]


def describe(node: str, update: dict[str, Any], top_k: int, titles: dict[str, str | None] | None = None) -> str | None:
    """One readable line (or a few) for a node's update; `titles` names scene ids the update only lists."""
    titles = titles or {}
    if node == "interpret":
        p = update["parse"]
        return f"[interpret] {p.language}: {len(p.clauses)} clause(s); entities {p.entities}; terms {p.terms[:8]}"
    if node == "build_scene":
        s = update["scene"]
        carried = len(update.get("active") or {})
        return (f"[build_scene] scene {s.id}: {len(s.components)} components, {len(s.couplings)} couplings, "
                f"delta {s.delta:.2f}" + (f", {carried} scene(s) carried from the last turn" if carried else ""))
    if node in ("resonate", "probe"):
        woke = sorted(update.get("active", {}).values(), key=lambda r: -r.score)[:top_k]
        via = woke[0].via if woke else ""
        head = "[resonate] woke" if node == "resonate" else f"[probe {via}] woke"
        return head + ": " + "; ".join(f"{_title(r)} ({s})" for r, s in zip(woke, strengths(woke)))
    if node == "expand":
        pending = set(update.get("pending") or [])
        probes = [p for p in update.get("probes") or [] if p.id in pending]
        if not probes:
            return None  # the `resolved` event says why expansion stopped, on one line
        lines = [f"[expand] depth {probes[0].depth}: {len(probes)} probe(s)"]
        lines += [f"    - {p.id} bridge \"{p.target}\" from [{titles.get(p.parent or '') or p.parent}]"
                  if p.reason == "bridge" else f"    - {p.id} [{p.reason}] {p.text[:90]}" for p in probes]
        return "\n".join(lines)
    if node == "formulate":
        fs = update.get("formulas") or []
        if not fs:
            return "[formulate] no linked scenes"
        return "\n".join(f"[formulate] {f.id}: {' -> '.join(titles.get(sid) or sid for sid in f.chain)}"
                         f" (via {', '.join(c.relation for c in f.links)})\n    {f.summary[:200]}" for f in fs)
    if node == "crystallize":
        cs = update.get("crystals") or []
        return f"[crystallize] crystal {cs[0].id} (seen {cs[0].count}x)" if cs else "[crystallize] no recurrence"
    return None


def run_ask(question: str, ctx: Context, as_json: bool, out=None) -> dict[str, Any]:
    from graph import graph

    out = out or sys.stdout  # looked up per call: a default bound at import misses a redirected stdout

    timings: dict[str, float] = {}
    state: dict[str, Any] = {}
    last = time.perf_counter()
    # A model decoder's tokens arrive on the "messages" stream: print them as they are generated.
    live = ctx.decoder != "extractive" and not as_json
    modes = ["updates", "custom", "values"] + (["messages"] if live else [])
    speaking = False
    for mode, chunk in graph.stream({"question": question}, context=ctx, stream_mode=modes):
        if mode == "messages":
            token, meta = chunk
            if meta.get("langgraph_node") == "decode" and token.content:
                if not speaking:
                    print("[decode] ", end="", file=out)
                    speaking = True
                print(token.content, end="", file=out, flush=True)
            continue
        if speaking:
            print(file=out)
            speaking = False
        if mode == "values":
            state = chunk
            continue
        if mode == "custom":
            if chunk.get("event") == "resolved" and not as_json:
                print(f"[expand] stop: {chunk['reason']}", file=out)
            continue
        now = time.perf_counter()
        for node, update in chunk.items():
            timings[node] = timings.get(node, 0.0) + (now - last)
            if not as_json and update:
                titles = {sid: r.title for sid, r in state.get("active", {}).items()}
                line = describe(node, update, ctx.top_k, titles)
                if line:
                    print(line, file=out, flush=True)
        last = now
    return {"state": state, "timings": timings}


def cmd_ask(args: argparse.Namespace) -> int:
    ctx = _context(args, decoder=args.decoder, top_k=args.top_k, max_depth=args.max_depth,
                   decoder_model=args.decoder_model, decoder_adapter=args.decoder_adapter,
                   decoder_quantize=args.decoder_quantize, max_new_tokens=args.max_new_tokens,
                   interpreter=args.interpreter)
    run = run_ask(args.question, ctx, args.json)
    state = run["state"]
    active = sorted(state.get("active", {}).values(), key=lambda r: -r.score)
    cited = {r.id: r for r in active}
    if args.json:
        print(json.dumps(clipped({
            "question": args.question,
            "answer": state.get("answer", ""),
            "evidence": [e.model_dump() for e in state.get("evidence", [])],
            "citations": [{"id": c, "title": cited[c].title if c in cited else None} for c in state.get("citations", [])],
            "scenes": [{"id": r.id, "title": r.title, "score": r.score, "via": r.via, "depth": r.depth}
                       for r in active[: ctx.top_k]],
            "probes": [p.model_dump(exclude={"vector"}) for p in state.get("probes", [])],
            "formulas": [f.model_dump(exclude={"vector"}) for f in state.get("formulas", [])],
            "retrievals": state.get("retrievals", 0),
            "timings_s": {k: round(v, 4) for k, v in run["timings"].items()},
        }), ensure_ascii=False))
        return 0
    print("\n" + format_answer(state.get("answer", ""), state.get("evidence", [])))
    return 0


def format_answer(answer: str, evidence: list) -> str:
    """`answer: Mexico City` and the numbered chain of evidence, one sentence per hop, with titles."""
    lines = [f"answer: {answer}", "evidence:" if evidence else "evidence: none"]
    for n, e in enumerate(evidence, 1):
        role = "" if e.role in ("answer", "bridge") else f" ({e.role})"
        lines.append(f"  {n}. [{e.title or e.scene_id}]{role} {e.text}")
        lines.append(f"     scene {e.scene_id}")
    return "\n".join(lines)


def cmd_stats(args: argparse.Namespace) -> int:
    from adapters.memory import store_stats

    ctx = _context(args)
    stats = store_stats(ctx.data_dir, ctx.embedder, store_url=ctx.store_url, state_url=ctx.state_url)
    print(json.dumps(stats, indent=2))
    if "problem" in stats:  # the numbers are shown; the disagreement is one line on stderr, exit 1
        print(f"scenemind: warning: {stats['problem']}", file=sys.stderr)
        return 1
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from adapters.embedder import E5_SMALL, MULTILINGUAL, embedder_info
    from scenemind_data import DEMO_QUESTION, DEMO_QUESTIONS_RU, DEMO_SCENES, DEMO_SCENES_XQUAD

    ctx = _context(args)
    name = embedder_info(ctx.embedder)[0]
    together = name in MULTILINGUAL  # one shared space: English films and Russian/English XQuAD in one store
    args.paths = [str(DEMO_SCENES)] + ([str(DEMO_SCENES_XQUAD)] if together else [])
    cmd_ingest(args)

    def ask(question: str) -> int:
        args.question = question
        print(f"\nask: {question}\n")
        return cmd_ask(args)

    if args.question:
        return ask(args.question)
    code = ask(DEMO_QUESTION)
    if code:
        return code
    if not together:
        if ctx.store_url:
            print(f"\n({name} reads English only; run the demo with --embedder {E5_SMALL} for the Russian questions)")
            return 0
        # The configured embedder reads English only: the Russian questions think in a store of their own.
        args.data_dir, args.embedder = f"{ctx.data_dir}-{E5_SMALL}", E5_SMALL
        print(f"\n({name} reads English only: the Russian questions use {E5_SMALL} in {args.data_dir})")
        args.paths = [str(DEMO_SCENES_XQUAD)]
        cmd_ingest(args)
    for question in DEMO_QUESTIONS_RU:
        code = ask(question)
        if code:
            return code
    return 0


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="scenemind", description=__doc__)
    ap.add_argument("--data-dir", help="store folder (default ./.scenemind or $SCENEMIND_DATA_DIR)")
    ap.add_argument("--store-url", help="Chroma server URL instead of the embedded store")
    ap.add_argument("--state-url", help="PostgreSQL URL for the couplings, writer lock and threads "
                                        "(default: files in the data dir, or $SCENEMIND_STATE_URL)")
    ap.add_argument("--embedder", help="embedder name or local folder")
    sub = ap.add_subparsers(dest="command", required=True)

    ing = sub.add_parser("ingest", help="add scenes from jsonl / txt / md / {title,text} json files")
    ing.add_argument("paths", nargs="+")
    ing.add_argument("--quiet", action="store_true", help="no progress bar")
    ing.add_argument("--add-only", action="store_true", dest="add_only",
                     help="keep scenes that vanished from a file ingested before (default: the file replaces them)")
    ing.set_defaults(func=cmd_ingest)

    def ask_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--json", action="store_true", help="one JSON object instead of the live trace")
        p.add_argument("--decoder", help="extractive (default) | hf:/path/to/model | openai:http://host:port/v1 | "
                                         "field:/path/to/field-decoder")
        p.add_argument("--decoder-model", dest="decoder_model", help="model name for an openai: endpoint")
        p.add_argument("--decoder-adapter", dest="decoder_adapter", help="peft adapter folder for an hf: decoder")
        p.add_argument("--decoder-quantize", dest="decoder_quantize", choices=["4bit", "8bit"],
                       help="load an hf: decoder through bitsandbytes")
        p.add_argument("--max-new-tokens", type=int, dest="max_new_tokens", help="bound on generated tokens")
        p.add_argument("--interpreter", help="a `scenemind train interpreter` adapter folder for build_scene")
        p.add_argument("--top-k", type=int, dest="top_k")
        p.add_argument("--max-depth", type=int, dest="max_depth")

    ask = sub.add_parser("ask", help="think about a question, streaming each step")
    ask.add_argument("question")
    ask_options(ask)
    ask.set_defaults(func=cmd_ask)

    demo = sub.add_parser("demo", help="ingest the bundled demo corpus and ask a two-hop question and two in Russian")
    demo.add_argument("question", nargs="?")
    demo.add_argument("--quiet", action="store_true")
    ask_options(demo)
    demo.set_defaults(func=cmd_demo)

    st = sub.add_parser("stats", help="what the store holds")
    st.set_defaults(func=cmd_stats)

    from graph.chat_cli import register as register_chat
    from graph.serve_cli import register as register_serve

    from graph.store_cli import register as register_store

    register_chat(sub)
    register_serve(sub)
    register_store(sub)

    from graph.train_cli import register as register_train

    register_train(sub)
    return ap


JSON_TEXT_CHARS = 4_000  # longest string `ask --json` prints: a scene is ~1,000 chars; 100,000 only from json input


def clipped(value: Any, limit: int = JSON_TEXT_CHARS) -> Any:
    """`value` with every string over `limit` chars cut (marked with its full length): bounded JSON output."""
    if isinstance(value, str):
        return value if len(value) <= limit else f"{value[:limit]}… [{len(value):,} chars]"
    if isinstance(value, dict):
        return {k: clipped(v, limit) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clipped(v, limit) for v in value]
    return value


def checked_question(text: str) -> str:
    """The question, or one line when it holds bytes that are not UTF-8 (argv and stdin carry them as surrogates)."""
    from state.errors import InputNotText

    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        code = ord(text[exc.start])
        what = f"byte 0x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"code point U+{code:04X}"
        raise InputNotText(f"the question is not valid UTF-8 ({what} at character {exc.start + 1}): "
                           "retype it or fix the terminal's encoding") from None
    return text


def main(argv: list[str] | None = None) -> int:
    from graph.store_cli import plain_error

    args = parser().parse_args(argv)
    if args.command == "chat" and hasattr(sys.stdin, "reconfigure"):
        sys.stdin.reconfigure(errors="surrogateescape")  # a bad byte fails its turn, not the conversation
    try:
        if isinstance(getattr(args, "question", None), str):
            args.question = checked_question(args.question)
        return args.func(args)
    except SceneMindError as exc:
        print(f"scenemind: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # what escaped the adapters: one line, unless it is a bug (or SCENEMIND_DEBUG)
        line = plain_error(exc)
        if line is None or os.environ.get("SCENEMIND_DEBUG"):
            raise
        print(f"scenemind: error: {line}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
