"""`scenemind check`, `scenemind repair`, `scenemind token`: the store's health and the services' secret.

    scenemind --data-dir DIR check     # exit 0 when store and couplings index agree, 1 when damaged
    scenemind --data-dir DIR repair    # rebuild what can be rebuilt; say what must be re-ingested
    scenemind token                    # a fresh random SCENEMIND_TOKEN for `serve --host 0.0.0.0`
"""

from __future__ import annotations

import argparse
import errno
import secrets
import sqlite3
import sys

TOKEN_BYTES = 32  # 256 bits, printed as 43 URL-safe characters


def cmd_check(args: argparse.Namespace) -> int:
    from adapters.store_health import check
    from graph.cli import _context

    ctx = _context(args)
    health = check(ctx.data_dir, ctx.embedder, store_url=ctx.store_url)
    print("\n".join(health.lines()))
    return 0 if health.ok else 1


def cmd_repair(args: argparse.Namespace) -> int:
    from adapters.store_health import repair
    from graph.cli import _context

    ctx = _context(args)
    report = repair(ctx.data_dir, ctx.embedder, store_url=ctx.store_url,
                    progress=lambda line: print(f"[repair] {line}", file=sys.stderr, flush=True))
    print("\n".join(report.lines(ctx.data_dir)))
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
    tok = sub.add_parser("token", help="print a fresh random SCENEMIND_TOKEN")
    tok.set_defaults(func=cmd_token)
