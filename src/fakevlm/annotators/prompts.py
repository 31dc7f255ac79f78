"""The prompt library (conf/base/parameters_annotation_prompts.yml) rendered and hashed."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def render_prompt(prompts: dict[str, Any], template: str, category: str, label: str, verdict: str) -> str:
    """The user prompt of `template` for one category and label: instruction, five aspects, label."""
    entry = prompts["categories"][category]
    aspects = "; ".join(f"({i}) {aspect['name']}" for i, aspect in enumerate(entry["aspects"], 1))
    return prompts["templates"][template].format(
        instruction=entry["instruction"][label],
        aspects=aspects,
        label_words=prompts["label_words"][label],
        verdict=verdict,
    )


def prompt_hash(*parts: Any) -> str:
    """A short, stable hash of everything that shapes an answer besides the image and the model."""
    text = json.dumps(parts, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
