"""Data that ships with scenemind: a small demo corpus (see ATTRIBUTION.md)."""

from pathlib import Path

DEMO_SCENES = Path(__file__).with_name("demo_scenes.jsonl")
DEMO_QUESTION = "Where was the director of the film Gaby: A True Story born?"
