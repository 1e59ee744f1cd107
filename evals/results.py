"""evals/RESULTS.md is shared by several benchmarks: each owns one `## ` section and replaces only it."""

from __future__ import annotations

import re
from pathlib import Path

HEADER = "# Results\n\nEvery number here was produced by the command written next to it, on this project's 2-core CPU machine.\n"


def replace_section(path: Path, title: str, body: str) -> None:
    """Replace (or append) the section `## title` of the results file, leaving the others as they are."""
    text = path.read_text(encoding="utf-8") if path.exists() else HEADER
    section = f"## {title}\n\n{body.strip()}\n"
    pattern = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text.rstrip("\n") + "\n", encoding="utf-8")
