"""FakeClue-style answers written from what a record knows about its image.

For FakeClue-mini every fake records the artifact family, region and strength its simulator
applied, so the explanation is true to the image by construction.
"""

from __future__ import annotations

import math
from typing import Any


def strength_word(strength: float | None, words: list[dict[str, Any]]) -> str:
    """The adjective for a relative strength: the word of the highest `from` not above it."""
    if strength is None or math.isnan(strength):
        return words[0]["word"]
    chosen = words[0]["word"]
    for entry in sorted(words, key=lambda e: e["from"]):
        if strength >= entry["from"]:
            chosen = entry["word"]
    return chosen


def grounded_answer(
    label: str,
    category: str,
    family: str | None,
    region: str | None,
    strength: float | None,
    templates: dict[str, Any],
) -> str:
    """The verdict sentence, then the artifact (fakes) and the category clue, in FakeClue's style."""
    if label not in templates["verdict"]:
        raise ValueError(f"label must be one of {sorted(templates['verdict'])}, got {label!r}")
    if category not in templates["categories"]:
        raise ValueError(f"no wording for category {category!r} in annotation.categories")
    sentences = [templates["verdict"][label]]
    if label == "fake":
        if family in templates["families"]:
            region_text = region or "the whole image"
            sentences.append(
                templates["families"][family].format(
                    region=region_text,
                    Region=region_text[:1].upper() + region_text[1:],
                    strength=strength_word(strength, templates["strength_words"]),
                )
            )
        else:
            sentences.append(templates["unknown_family"])
    sentences.append(templates["categories"][category][label])
    return " ".join(sentences)
