"""Annotators: whatever writes an image's FakeClue-style answer, told the true label.

Three kinds, chosen in `annotation.available.<name>.kind`: `grounded` (offline measurements and
the record's facts, grounded.py), `transformers` (a local vision-language checkpoint,
local_vlm.py) and `openai` (an OpenAI-compatible endpoint, openai_endpoint.py). Each one gets
a list of requests and reports every answer through `done` as soon as it has it, so the caller
can cache it before the next one; failures come back as {request id: error}.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import pandas as pd

from fakevlm.annotators.cache import AnnotationCache
from fakevlm.annotators.prompts import prompt_hash, render_prompt

log = logging.getLogger(__name__)

OUTPUT_COLUMNS = ("id", "annotator", "model", "prompt_hash", "answer", "error")


@dataclass(frozen=True)
class Request:
    """One image to annotate, with what its record knows and the prompt it is asked."""

    id: str
    image_path: str
    sha256: str
    label: str
    category: str
    family: str | None
    region: str | None
    strength: float | None
    prompt: str
    prompt_hash: str


Done = Callable[[Request, str], None]


class Annotator(Protocol):
    name: str
    model: str  # what answers: a model name, a checkpoint fingerprint, the grounded wording's hash
    template: str  # the prompt library's template it is asked with

    def annotate(self, requests: Sequence[Request], done: Done) -> dict[str, str]: ...


def build_annotator(name: str, params: dict[str, Any], prompts: dict[str, Any], api_key: str | None) -> Annotator:
    """The annotator `annotation.available[name]` describes."""
    spec = params["available"][name]
    kind = spec["kind"]
    if kind == "grounded":
        from fakevlm.annotators.grounded import GroundedAnnotator

        return GroundedAnnotator(name, spec, params, prompts)
    if kind == "transformers":
        from fakevlm.annotators.local_vlm import TransformersAnnotator

        return TransformersAnnotator(name, spec, prompts)
    if kind == "openai":
        from fakevlm.annotators.openai_endpoint import OpenAIAnnotator

        return OpenAIAnnotator(name, spec, prompts, api_key)
    raise ValueError(f"annotator {name!r} has unknown kind {kind!r}; known: grounded, transformers, openai")


def requests_for(rows: pd.DataFrame, annotator: Annotator, prompts: dict[str, Any], verdicts: dict[str, str]) -> list[Request]:
    """One request per row, with the prompt `annotator` is asked for that row's category and label."""
    rendered: dict[tuple[str, str], tuple[str, str]] = {}
    for category, label in set(zip(rows["category"], rows["label"])):
        text = render_prompt(prompts, annotator.template, category, label, verdicts[label])
        # the system prompt and the category's aspects shape the answer too
        rendered[category, label] = text, prompt_hash(prompts["system"], text, prompts["categories"][category])
    return [
        Request(
            id=row.id, image_path=row.image_path, sha256=row.sha256, label=row.label, category=row.category,
            family=_text(row.artifact_family), region=_text(row.artifact_region),
            strength=None if pd.isna(row.artifact_strength) else float(row.artifact_strength),
            prompt=rendered[row.category, row.label][0], prompt_hash=rendered[row.category, row.label][1],
        )
        for row in rows.itertuples(index=False)
    ]  # fmt: skip


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def run_cached(annotator: Annotator, requests: Sequence[Request], cache: AnnotationCache) -> pd.DataFrame:
    """Every request's answer from `annotator`: from the cache, else asked and cached at once.

    Failures are not cached, so the next run asks again; they come back with `error` set.
    """
    keys = {r.id: cache.key(r.sha256, annotator.name, annotator.model, r.prompt_hash) for r in requests}
    answers: dict[str, str] = {}
    missing = []
    for request in requests:
        entry = cache.get(keys[request.id])
        if entry is None:
            missing.append(request)
        else:
            answers[request.id] = entry["answer"]

    def done(request: Request, answer: str) -> None:
        cache.put(keys[request.id], {"answer": answer, "annotator": annotator.name, "model": annotator.model,
                                     "prompt_hash": request.prompt_hash, "image_sha256": request.sha256})
        answers[request.id] = answer

    errors = annotator.annotate(missing, done) if missing else {}
    log.info("annotator %s: %d from the cache, %d asked, %d failed",
             annotator.name, len(requests) - len(missing), len(missing), len(errors))
    return pd.DataFrame(
        [(r.id, annotator.name, annotator.model, r.prompt_hash, answers.get(r.id), errors.get(r.id))
         for r in requests],
        columns=list(OUTPUT_COLUMNS),
    )
