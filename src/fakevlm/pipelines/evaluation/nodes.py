"""Evaluation: generate answers on each benchmark split and score them."""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd

from fakevlm.baseline import LABELS, CNNDetector
from fakevlm.metrics import flatten_metrics, parse_verdict, probability_scores, score, score_verdicts
from fakevlm.model import FakeVLM
from fakevlm.training import load_examples, split_rows

log = logging.getLogger(__name__)


def benchmark_splits(params: dict[str, Any]) -> list[tuple[str, str]]:
    """(manifest split, benchmark name) of every configured benchmark, sorted."""
    return [(split, benchmark) for split, benchmark in sorted(params["benchmarks"].items()) if benchmark is not None]


def predict(fakevlm_model: FakeVLM, manifest: pd.DataFrame, params: dict[str, Any], question: str) -> pd.DataFrame:
    """One row per benchmark image: the generated answer, its parsed verdict and the reference."""
    frames = []
    for split, benchmark in benchmark_splits(params):
        rows = split_rows(manifest, split)
        examples = load_examples(rows)
        answers, fake_probabilities = fakevlm_model.answer(
            [e.image for e in examples], question, params["max_new_tokens"], params["batch_size"]
        )
        frames.append(
            pd.DataFrame(
                {
                    "benchmark": benchmark,
                    "id": rows["id"].to_numpy(),
                    "image_path": rows["image_path"].to_numpy(),
                    "category": rows["category"].to_numpy(),
                    "label": rows["label"].to_numpy(),
                    "artifact_family": rows["artifact_family"].to_numpy(),
                    "reference": rows["answer"].to_numpy(),
                    "prediction": answers,
                    "predicted_label": [parse_verdict(a) for a in answers],
                    "fake_probability": fake_probabilities,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def compute_metrics(predictions: pd.DataFrame) -> dict[str, Any]:
    """Accuracy, F1, ROUGE-L and CSS per benchmark, overall and per category."""
    metrics = {}
    for benchmark, rows in predictions.groupby("benchmark", sort=True):
        metrics[benchmark] = score(
            rows["prediction"].tolist(),
            rows["reference"].tolist(),
            rows["label"].tolist(),
            categories=rows["category"].tolist(),
        )
        metrics[benchmark].update(probability_scores(rows["fake_probability"].tolist(), rows["label"].tolist()))
        for category, part in rows.groupby("category", sort=True):
            metrics[benchmark]["per_category"][category].update(
                probability_scores(part["fake_probability"].tolist(), part["label"].tolist()))
        # per generator / artifact family where the source says which; real images as "real"
        families = rows["artifact_family"].where(rows["label"] == "fake", "real").fillna("unknown")
        metrics[benchmark]["per_family"] = score_verdicts(
            rows["predicted_label"].fillna("unparsed").tolist(), rows["label"].tolist(), families.tolist()
        )["per_category"]
        log.info(
            "%s: accuracy %.3f  f1 %.3f  rouge_l %.3f  css %.3f  (n=%d)",
            benchmark,
            metrics[benchmark]["accuracy"],
            metrics[benchmark]["f1"],
            metrics[benchmark]["rouge_l"],
            metrics[benchmark]["css"],
            metrics[benchmark]["n"],
        )
    return metrics


def evaluate_baseline(
    baseline_model: CNNDetector, validated_manifest: pd.DataFrame, params: dict[str, Any]
) -> dict[str, Any]:
    """The CNN baseline's verdict metrics on every benchmark, overall and per category."""
    metrics = {}
    for split, benchmark in benchmark_splits(params):
        rows = split_rows(validated_manifest, split)
        probabilities = baseline_model.fake_probability([e.image for e in load_examples(rows)])
        predicted = [LABELS[int(p >= 0.5)] for p in probabilities]
        metrics[benchmark] = score_verdicts(predicted, rows["label"].tolist(), rows["category"].tolist())
        log.info("%s: baseline CNN accuracy %.3f", benchmark, metrics[benchmark]["accuracy"])
    return metrics


def evaluate(
    fakevlm_model: FakeVLM,
    validated_manifest: pd.DataFrame,
    baseline_metrics: dict[str, Any],
    params: dict[str, Any],
    question: str,
) -> tuple[pd.DataFrame, dict[str, Any], dict[str, dict[str, float]]]:
    """Predictions, the metrics report (the baseline's beside FakeVLM's) and the metrics for MLflow."""
    predictions = predict(fakevlm_model, validated_manifest, params, question)
    metrics = compute_metrics(predictions)
    for benchmark, baseline in baseline_metrics.items():
        metrics[benchmark]["baseline_cnn"] = baseline
    mlflow_metrics = {k: {"value": v, "step": 0} for k, v in flatten_metrics(metrics).items()}
    return predictions, metrics, mlflow_metrics
