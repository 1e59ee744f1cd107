"""`scenemind chat --thread ID`: a conversation kept in a checkpointer, across restarts and machines.

    scenemind chat --thread notes "Who directed Gaby: A True Story?" "Where was he born?"
    scenemind chat --thread notes            # questions from stdin, one per line

Each question is one turn of the thread. The active scenes carry from turn to
turn (keep-strongest merge) and each new scene's delta is measured against the
field the last turn settled on; probes and the retrieval budget are per turn.
Every step is checkpointed before the next one starts (durability "sync"), so a
chat killed mid-turn resumes that turn from its last checkpoint when it starts
again on the same thread. Checkpoints live in DATA_DIR/threads.sqlite, or in the
PostgreSQL database at --state-url, where a process on another machine continues
the thread.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, TextIO

from state.context import Context
from state.errors import SceneMindError

def thread_graph(path: Path, state_url: str = ""):
    """The thinking graph over the thread checkpoints: PostgreSQL at state_url, else the SQLite file at path."""
    from adapters.threads import open_checkpointer
    from graph.builder import build_graph

    return build_graph(checkpointer=open_checkpointer(path, state_url))


def run_turn(graph: Any, config: dict, turn_input: dict | None, ctx: Context, as_json: bool,
             out: TextIO | None = None) -> dict[str, Any]:
    """One turn (or the rest of an interrupted one when `turn_input` is None), printed as it runs."""
    from graph.cli import describe

    out = out or sys.stdout  # looked up per call: a default bound at import misses a redirected stdout

    steps: list[str] = []
    final: dict[str, Any] = {}
    for mode, chunk in graph.stream(turn_input, config, context=ctx, stream_mode=["updates", "values"],
                                    durability="sync"):
        if mode == "values":
            final = chunk
            continue
        for node, update in chunk.items():
            steps.append(node)
            titles = {sid: r.title for sid, r in final.get("active", {}).items()}
            line = describe(node, update, ctx.top_k, titles) if update and not as_json else None
            if line:
                print(line, file=out, flush=True)
    return {"steps": steps, "state": final}


def report(thread: str, turn: dict[str, Any], resumed: bool, as_json: bool, top_k: int,
           out: TextIO | None = None) -> None:
    out = out or sys.stdout
    state = turn["state"]
    active = sorted(state.get("active", {}).values(), key=lambda r: -r.score)
    if as_json:
        print(json.dumps({
            "thread": thread, "resumed": resumed, "question": state.get("question", ""),
            "answer": state.get("answer", ""), "citations": state.get("citations", []),
            "evidence": [e.model_dump() for e in state.get("evidence", [])],
            "retrievals": state.get("retrievals", 0), "probes": [p.id for p in state.get("probes", [])],
            "active": [r.id for r in active], "delta": (state["scene"].delta if state.get("scene") else None),
            "steps": turn["steps"],
        }, ensure_ascii=False), file=out, flush=True)
        return
    from graph.cli import format_answer

    print("\n" + format_answer(state.get("answer", ""), state.get("evidence", [])) + "\n", file=out, flush=True)


def questions(args: argparse.Namespace):
    if args.questions:
        yield from args.questions
        return
    interactive = sys.stdin.isatty()
    while True:
        if interactive:
            print("you> ", end="", flush=True)
        line = sys.stdin.readline()
        if not line:
            return
        line = line.strip()
        if line in ("/exit", "/quit"):
            return
        if line:
            yield line


def cmd_chat(args: argparse.Namespace) -> int:
    from graph.cli import _context

    # A conversation is where fields recur: chat writes formulas, fields and crystals back to memory.
    ctx = _context(args, decoder=args.decoder, top_k=args.top_k, max_depth=args.max_depth, write_back=True)
    # An explicit --checkpoints file wins over the shared database.
    state_url = "" if args.checkpoints else ctx.state_url
    path = Path(args.checkpoints or Path(ctx.data_dir) / "threads.sqlite")
    graph = thread_graph(path, state_url)
    try:
        return converse(graph, args, ctx)
    except Exception as exc:
        from adapters.threads import is_postgres_failure, unavailable

        if state_url and is_postgres_failure(exc):  # the server went away mid-conversation
            raise unavailable(state_url, exc) from None
        raise


def converse(graph: Any, args: argparse.Namespace, ctx: Context) -> int:
    config = {"configurable": {"thread_id": args.thread}}
    snapshot = graph.get_state(config)
    failed = [t.error for t in snapshot.tasks if t.error]
    status = 0
    if snapshot.next and not failed:
        question = snapshot.values.get("question", "")
        print(f"[chat] resuming the interrupted turn of thread {args.thread!r}: {question}", file=sys.stderr,
              flush=True)
        report(args.thread, run_turn(graph, config, None, ctx, args.json), True, args.json, ctx.top_k)
    elif failed:
        print(f"[chat] the last turn of thread {args.thread!r} failed ({failed[0]}); ask again", file=sys.stderr)
    for question in questions(args):
        try:
            from graph.cli import checked_question

            turn = run_turn(graph, config, {"question": checked_question(question)}, ctx, args.json)
        except SceneMindError as exc:  # one bad turn does not end the conversation
            print(f"scenemind: error: {exc}", file=sys.stderr, flush=True)
            status = 2
            continue
        report(args.thread, turn, False, args.json, ctx.top_k)
    return status


def register(sub: argparse._SubParsersAction) -> None:
    chat = sub.add_parser("chat", help="a conversation on a durable thread (SQLite or PostgreSQL checkpoints)",
                          description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    chat.add_argument("questions", nargs="*", help="questions to ask in order (default: read lines from stdin)")
    chat.add_argument("--thread", required=True, help="thread id: the same id continues the same conversation")
    chat.add_argument("--checkpoints", help="checkpoint SQLite file (default: the --state-url PostgreSQL database "
                                            "if set, else DATA_DIR/threads.sqlite)")
    chat.add_argument("--json", action="store_true", help="one JSON line per turn instead of the live trace")
    chat.add_argument("--decoder", help="extractive (default) | hf:... | openai:... | field:...")
    chat.add_argument("--top-k", type=int, dest="top_k")
    chat.add_argument("--max-depth", type=int, dest="max_depth")
    chat.set_defaults(func=cmd_chat)
