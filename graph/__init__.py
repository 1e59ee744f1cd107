"""The compiled scenemind graph (no checkpointer: the CLI and servers bring their own)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("LANGGRAPH_NO_VERSION_CHECK", "true")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

from graph.builder import build_graph  # noqa: E402

graph = build_graph()

__all__ = ["build_graph", "graph"]
