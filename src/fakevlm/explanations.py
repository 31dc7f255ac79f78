"""Several annotators' answers for one image -> one FakeClue-style answer, and the checks on it.

Pure text functions: split an answer into clues, merge clues that enough annotators support
(matched by sentence-embedding similarity), and the filters that send an answer to quarantine
(contradicts the label, too short or long, generic boilerplate, no clue left).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fakevlm.metrics import parse_verdict

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\s*\n+\s*")
_WORD = re.compile(r"\S+")

Embed = Callable[[Sequence[str]], dict[str, np.ndarray]]


def clues(answer: str) -> list[str]:
    """The answer's sentences after its verdict sentence (if its first sentence states one)."""
    sentences = [s.strip() for s in _SENTENCE_END.split(answer.strip()) if s.strip()]
    if sentences and parse_verdict(sentences[0]) is not None:
        sentences = sentences[1:]
    return sentences


def word_count(text: str) -> int:
    return len(_WORD.findall(text))


@dataclass(frozen=True)
class Merged:
    """A merged answer (None: no clue survived) and the share of its clues another annotator backs."""

    answer: str | None
    agreement: float


def merge(
    verdict: str,
    answers: Sequence[str],
    embeddings: dict[str, np.ndarray],
    params: dict[str, Any],
    trusted: Sequence[bool] | None = None,
) -> Merged:
    """The verdict sentence, then the clues at least `min_support_share` of the annotators back.

    `answers` are in the configured annotator order; `embeddings` holds every clue's unit vector.
    A clue's support is its own annotator plus each other annotator with a clue at least
    `match_similarity` alike. A `trusted` annotator's clues (measured or recorded facts) need no
    backing. Clues that repeat a kept one are dropped; the best supported come first (ties:
    annotator order, then position), at most `max_clues`. A single answer is taken as it stands,
    behind the verdict sentence.
    """
    per_annotator = [clues(answer) for answer in answers]
    if len(answers) == 1:
        kept = per_annotator[0]
        return Merged(" ".join([verdict, *kept]) if kept else None, math.nan)
    need = math.ceil(params["min_support_share"] * len(answers) - 1e-9)
    trusted = trusted or [False] * len(answers)
    candidates = []
    for a, own in enumerate(per_annotator):
        for position, clue in enumerate(own):
            support = 1 + sum(
                any(_similar(clue, theirs, embeddings, params) for theirs in other)
                for b, other in enumerate(per_annotator) if b != a
            )  # fmt: skip
            candidates.append((-support, a, position, clue))
    kept: list[str] = []
    for negative_support, a, _, clue in sorted(candidates):
        if (trusted[a] or -negative_support >= need) and not any(_similar(clue, k, embeddings, params) for k in kept):
            kept.append(clue)
    backed = sum(1 for s, *_ in candidates if -s > 1)
    agreement = backed / len(candidates) if candidates else math.nan
    kept = kept[: params["max_clues"]]
    return Merged(" ".join([verdict, *kept]) if kept else None, agreement)


def _similar(a: str, b: str, embeddings: dict[str, np.ndarray], params: dict[str, Any]) -> bool:
    return a == b or float(embeddings[a] @ embeddings[b]) >= params["match_similarity"]


def contradicts(answer: str, label: str) -> bool:
    """Whether the answer states the other verdict (an answer that states none does not)."""
    verdict = parse_verdict(answer)
    return verdict is not None and verdict != label


def length_problem(answer: str, bounds: dict[str, int]) -> str | None:
    words = word_count(answer)
    if words < bounds["min"]:
        return f"too short: {words} words < {bounds['min']}"
    if words > bounds["max"]:
        return f"too long: {words} words > {bounds['max']}"
    return None


def generic_mask(
    answers: Sequence[str], similarity: float, max_share: float, min_count: int, chunk: int = 1024
) -> np.ndarray:
    """True for each answer that is near-identical (TF-IDF cosine >= `similarity`, on words and
    word pairs) to at least `max_share` of all the answers, and to at least `min_count` of them
    (in a handful of answers two alike are no boilerplate): text that says nothing about its image. Lexical on purpose: it catches copies and templates, and costs a second for
    thousands of answers where sentence embeddings would cost minutes on a CPU."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    if not answers:
        return np.zeros(0, dtype=bool)
    # identical copies are compared once and counted by their multiplicity
    unique, inverse, counts = np.unique(np.asarray(answers, dtype=object), return_inverse=True, return_counts=True)
    vectors = TfidfVectorizer(ngram_range=(1, 2), lowercase=True).fit_transform(unique.tolist())
    neighbours = np.concatenate([
        (vectors[start : start + chunk] @ vectors.T >= similarity).astype(np.int64) @ counts - 1
        for start in range(0, len(unique), chunk)
    ])  # fmt: skip
    return (neighbours >= max(max_share * len(answers), min_count))[inverse]
