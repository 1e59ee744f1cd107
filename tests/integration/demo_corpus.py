"""A quick store's worth of the bundled demo corpus, for tests that ingest through the CLI or a server."""

from __future__ import annotations

import json
from pathlib import Path

from scenemind_data import DEMO_SCENES

NEEDED = {"Gaby: A True Story", "Luis Mandoki"}  # the scenes the demo question's two hops need


def small_corpus(folder: Path, n: int = 20) -> Path:
    """The two scenes the demo question needs and the first others: a jsonl file of `n` scenes in `folder`."""
    lines = Path(DEMO_SCENES).read_text().splitlines()
    needed = [ln for ln in lines if json.loads(ln).get("title") in NEEDED]
    path = folder / "small.jsonl"
    path.write_text("\n".join(needed + [ln for ln in lines if ln not in needed][: n - len(needed)]) + "\n")
    return path
