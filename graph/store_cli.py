"""`scenemind check`, `repair`, `forget`, `token`: the store's health, removing scenes, the services' secret.

    scenemind --data-dir DIR check     # exit 0 when store and couplings index agree, 1 when damaged
    scenemind --data-dir DIR repair    # rebuild what can be rebuilt; say what must be re-ingested
    scenemind forget --source PATH|ID  # remove every scene a file (or a document id) brought
    scenemind forget --scene ID...     # remove these scenes
    scenemind token                    # a fresh random SCENEMIND_TOKEN for `serve --host 0.0.0.0`
"""

from __future__ import annotations

import argparse
import errno
import os
import secrets
import sqlite3
import sys

TOKEN_BYTES = 32  # 256 bits, printed as 43 URL-safe characters


def cmd_check(args: argparse.Namespace) -> int:
    from adapters.store_health import check
    from graph.cli import _context

    ctx = _context(args)
    health = check(ctx.data_dir, ctx.embedder, store_url=ctx.store_url, state_url=ctx.state_url)
    print("\n".join(health.lines()))
    return 0 if health.ok else 1


def cmd_repair(args: argparse.Namespace) -> int:
    from adapters.store_health import repair
    from graph.cli import _context

    ctx = _context(args)
    report = repair(ctx.data_dir, ctx.embedder, store_url=ctx.store_url, state_url=ctx.state_url,
                    progress=lambda line: print(f"[repair] {line}", file=sys.stderr, flush=True))
    print("\n".join(report.lines(ctx.data_dir)))
    return 0


def source_names(given: list[str]) -> list[str]:
    """A source as ingest recorded it: a file's absolute path (as typed, too: it may be a document id)."""
    out: list[str] = []
    for name in given:
        out += [name, os.path.realpath(name)]
    return list(dict.fromkeys(out))


def cmd_forget(args: argparse.Namespace) -> int:
    from adapters.memory import open_memory
    from graph.cli import _context

    if not args.source and not args.scene:
        print("scenemind: error: forget what? give --source PATH|ID or --scene ID...", file=sys.stderr)
        return 2
    ctx = _context(args)
    # Not verified on open: opening would finish a forget that was killed before this one could count it,
    # and a rerun of that forget would then say "nothing to forget".
    mem = open_memory(ctx.data_dir, ctx.embedder, store_url=ctx.store_url, state_url=ctx.state_url, verify=False)
    report = mem.forget(source=source_names(args.source or []), scene_ids=args.scene or [])
    print(f"forgot {report.removed} scenes -> {report.scenes} scenes left in {mem.where}")
    if report.formulas_rewritten or report.formulas_dropped:
        print(f"  formulas: {report.formulas_rewritten} lost a citation, {report.formulas_dropped} dropped "
              "(their chain broke)")
    if report.crystals_weakened or report.crystals_dropped:
        print(f"  crystals: {report.crystals_weakened} weakened, {report.crystals_dropped} dropped (nothing left)")
    if report.not_found:
        print(f"  not in memory: {', '.join(report.not_found[:10])}" +
              (f" (and {len(report.not_found) - 10} more)" if len(report.not_found) > 10 else ""))
    if not report.removed:
        what = ", ".join(args.source or []) or ", ".join(args.scene or [])
        print(f"scenemind: nothing to forget: no scene in memory came from or is {what}", file=sys.stderr)
        return 1
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    print(secrets.token_urlsafe(TOKEN_BYTES))
    return 0


def plain_error(exc: BaseException) -> str | None:
    """One line for what escaped the adapters' own translation; None for a real bug (keep its traceback)."""
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return f"disk full ({exc.filename or exc}): nothing half-written was kept; free space and rerun"
    if isinstance(exc, OSError):
        return f"{exc.strerror or exc} ({exc.filename or type(exc).__name__})"
    if isinstance(exc, sqlite3.Error):
        return f"a SQLite file failed ({exc}): run `scenemind check` to see which, then `scenemind repair`"
    if isinstance(exc, RecursionError):
        return "input nested too deeply to read: flatten it"
    if isinstance(exc, UnicodeError):
        return f"text that is not valid UTF-8 ({exc}): fix the bytes and rerun"
    if isinstance(exc, MemoryError):
        return "out of memory: a scene or an answer is too large; split the input"
    return None


def register(sub: argparse._SubParsersAction) -> None:
    chk = sub.add_parser("check", help="does the store agree with its couplings index? (reads only)")
    chk.set_defaults(func=cmd_check)
    rep = sub.add_parser("repair", help="re-embed or re-index what is missing from what survives")
    rep.set_defaults(func=cmd_repair)
    fgt = sub.add_parser("forget", help="remove scenes: all of a source (file or document id), or given ids")
    fgt.add_argument("--source", action="append", metavar="PATH|ID",
                     help="a file ingested before (its path) or a document id given at ingest; repeatable")
    fgt.add_argument("--scene", nargs="+", metavar="ID", help="scene ids (as `ask` prints them)")
    fgt.set_defaults(func=cmd_forget)
    tok = sub.add_parser("token", help="print a fresh random SCENEMIND_TOKEN")
    tok.set_defaults(func=cmd_token)
