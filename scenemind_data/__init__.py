"""Data that ships with scenemind: a small demo corpus (see ATTRIBUTION.md)."""

from pathlib import Path

DEMO_SCENES = Path(__file__).with_name("demo_scenes.jsonl")
DEMO_QUESTION = "Where was the director of the film Gaby: A True Story born?"
# XQuAD paragraphs: six articles in Russian, three others in English (one store with the English demo).
DEMO_SCENES_XQUAD = Path(__file__).with_name("demo_scenes_xquad.jsonl")
DEMO_QUESTIONS_RU = [
    "В каком году Джеймс Дьюар получил жидкий кислород?",  # answered by a Russian scene
    "Кто был первым директором музея Виктории и Альберта?",  # answered by an English scene
]
