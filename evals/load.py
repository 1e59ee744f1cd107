"""Load: N concurrent clients against the agent services on 127.0.0.1, for a bounded time.

    python -m evals.load --data-dir DIR [--clients 50] [--seconds 30]   # starts `scenemind serve all`, stops it
    python -m evals.load --url http://127.0.0.1:8100 [...]             # a `serve all` already running

Each client loops over the read-only node calls of one question's run —
interpret, build_scene, resonate, expand, probe, decode — with bodies prepared
once from a real run, and waits for each answer before its next request.
formulate and crystallize write to the store and are left out, so the store is
the same after the load as before. Prints requests/s, p50/p99 latency per node
and overall, and the error count; `--record` puts the numbers in the "## Load"
section of evals/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import httpx
import numpy as np

from adapters.agent_client import as_update, call_node, node_payload
from adapters.agent_protocol import NODE_AGENT
from evals.results import replace_section
from state.context import Context
from state.thinking import ThinkingState

QUESTION = "Where was the director of the film Gaby: A True Story born?"
NODES = ("interpret", "build_scene", "resonate", "expand", "probe", "decode")
RESULTS = Path(__file__).with_name("RESULTS.md")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_service(data_dir: str, store_url: str = "") -> tuple[subprocess.Popen, str]:
    port = _free_port()
    scenemind = str(Path(sys.executable).with_name("scenemind"))
    argv = [scenemind, "--data-dir", data_dir] + (["--store-url", store_url] if store_url else [])
    proc = subprocess.Popen(argv + ["serve", "all", "--port", str(port)], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                return proc, url
        except OSError:
            if proc.poll() is not None:
                raise SystemExit(f"scenemind serve all exited: {proc.stderr.read()[-2000:]}")
            if time.monotonic() > deadline:
                os.killpg(proc.pid, signal.SIGKILL)
                raise SystemExit("scenemind serve all did not start in 180 s")
            time.sleep(0.3)


def stop_service(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def prepare(base: str, ctx: Context) -> dict[str, bytes]:
    """One body per node, from a real run of the question through the services (node by node)."""
    def url(node: str) -> str:
        return f"{base}/{NODE_AGENT[node]}"

    def step(state: ThinkingState, node: str) -> ThinkingState:
        update = as_update(call_node(node, url(node), node_payload(node, state, ctx), 120))
        plain = {k: getattr(v, "value", v) for k, v in update.items()}  # a fresh state: overwrites are values
        return state.model_copy(update=plain)

    bodies: dict[str, bytes] = {}
    state = ThinkingState(question=QUESTION)
    for node in ("interpret", "build_scene", "resonate", "expand"):
        bodies[node] = json.dumps(node_payload(node, state, ctx)).encode()
        state = step(state, node)
    if not state.probes:
        raise SystemExit("the prepared run spawned no probe; ask a multi-hop question of a store that has its scenes")
    bodies["probe"] = json.dumps(node_payload("probe", {"probe": state.probes[0]}, ctx)).encode()
    bodies["decode"] = json.dumps(node_payload("decode", state, ctx)).encode()
    return bodies


async def drive(base: str, bodies: dict[str, bytes], clients: int, seconds: float, timeout_s: float) -> dict:
    latencies: dict[str, list[float]] = {n: [] for n in NODES}
    errors: dict[str, int] = {}
    headers = {"Content-Type": "application/json"}
    if os.environ.get("SCENEMIND_TOKEN"):
        headers["Authorization"] = f"Bearer {os.environ['SCENEMIND_TOKEN']}"
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=timeout_s, limits=limits, headers=headers) as http:
        stop_at = time.monotonic() + seconds

        async def client(n: int) -> None:
            turn = n  # clients start at different nodes so every node is loaded from the first second
            while time.monotonic() < stop_at:
                node = NODES[turn % len(NODES)]
                turn += 1
                started = time.perf_counter()
                try:
                    resp = await http.post(f"{base}/{NODE_AGENT[node]}/v1/{node}", content=bodies[node])
                    ok = resp.status_code == 200
                    kind = f"{node}: HTTP {resp.status_code}"
                except httpx.HTTPError as exc:
                    ok, kind = False, f"{node}: {type(exc).__name__}"
                if ok:
                    latencies[node].append(time.perf_counter() - started)
                else:
                    errors[kind] = errors.get(kind, 0) + 1

        started = time.monotonic()
        await asyncio.gather(*(client(n) for n in range(clients)))
        elapsed = time.monotonic() - started
    return {"latencies": latencies, "errors": errors, "elapsed": elapsed}


def summary(result: dict) -> list[tuple[str, int, float, float, float]]:
    """(node, requests, requests/s, p50 ms, p99 ms) per node and for all of them."""
    rows = []
    everything: list[float] = []
    for node, values in result["latencies"].items():
        everything += values
        if values:
            rows.append((node, len(values), len(values) / result["elapsed"],
                         1000 * float(np.percentile(values, 50)), 1000 * float(np.percentile(values, 99))))
    if everything:
        rows.append(("all", len(everything), len(everything) / result["elapsed"],
                     1000 * float(np.percentile(everything, 50)), 1000 * float(np.percentile(everything, 99))))
    return rows


def store_label(data_dir: str | None, store_url: str, url: str | None) -> str:
    """Which store the load ran against, in words, for the report."""
    if data_dir:
        return f"store {data_dir}, " + (f"Chroma server {store_url}" if store_url else "embedded Chroma")
    return f"the store of the running service at {url}"


def render(rows, result: dict, clients: int, seconds: float, command: str, store: str) -> str:
    errors = sum(result["errors"].values())
    lines = [
        f"`{command}`",
        "",
        f"{clients} concurrent clients for {seconds:g} s against one `scenemind serve all` on 127.0.0.1 "
        f"({store}), load generator on the same machine "
        f"({os.cpu_count()} CPUs, {platform.python_implementation()} {platform.python_version()}); "
        f"measured {time.strftime('%Y-%m-%d')}.",
        "",
        "| node | requests | requests/s | p50 ms | p99 ms |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [f"| {n} | {c} | {r:.1f} | {p50:.0f} | {p99:.0f} |" for n, c, r, p50, p99 in rows]
    lines += ["", f"errors: {errors}" + (f" ({result['errors']})" if errors else ""), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    where = ap.add_mutually_exclusive_group(required=True)
    where.add_argument("--url", help="a running `scenemind serve all` (http://127.0.0.1:8100)")
    where.add_argument("--data-dir", help="a store to serve: starts `scenemind serve all` on a free port")
    ap.add_argument("--store-url", default="", help="Chroma server for --data-dir (default: the embedded store)")
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds one request may take before it is an error")
    ap.add_argument("--record", action="store_true", help="write the numbers to the Load section of RESULTS.md")
    args = ap.parse_args(argv)
    command = "python -m evals.load " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    proc = None
    if args.data_dir:
        proc, base = start_service(os.path.abspath(args.data_dir), args.store_url)
    else:
        base = args.url.rstrip("/")
    try:
        bodies = prepare(base, Context())
        result = asyncio.run(drive(base, bodies, args.clients, args.seconds, args.timeout))
    finally:
        if proc is not None:
            stop_service(proc)
    rows = summary(result)
    store = store_label(os.path.abspath(args.data_dir) if args.data_dir else None, args.store_url, args.url)
    section = render(rows, result, args.clients, args.seconds, command, store)
    print(section)
    if args.record:
        replace_section(RESULTS, "Load", section)
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
