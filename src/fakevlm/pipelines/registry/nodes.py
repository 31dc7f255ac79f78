"""Registry: register the trained model in MLflow, promote it when it beats the champion."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow import MlflowClient

from fakevlm.formats import open_image
from fakevlm.metrics import flatten_metrics
from fakevlm.model import FakeVLM
from fakevlm.pipelines.evaluation.nodes import compute_metrics, predict
from fakevlm.registry import RUN_METRIC_PREFIX, log_model_artifacts, promote_if_better, server_failures
from fakevlm.training import split_rows


def evaluation_data_hash(manifest: pd.DataFrame, split: str) -> str:
    """A hash of the evaluation split's content (ids, image bytes' sha256, labels, reference
    answers: ROUGE-L and CSS are measured against them), order-free."""
    rows = split_rows(manifest, split).sort_values("id")
    text = "\n".join(f"{r.id}\t{r.sha256}\t{r.label}\t{r.answer}" for r in rows.itertuples(index=False))
    return hashlib.sha256(text.encode()).hexdigest()


def benchmark_metrics(metrics: dict[str, Any], benchmark: str) -> dict[str, float]:
    """One benchmark's metrics of FakeVLM, flat (`per_category.doc.accuracy`), the baseline's left out."""
    return flatten_metrics({k: v for k, v in metrics[benchmark].items() if k != "baseline_cnn"})


def champion_scorer(
    manifest: pd.DataFrame, params: dict[str, Any], evaluation: dict[str, Any]
) -> Callable[[str], dict[str, float]]:
    """Scores a registered version, asked its own question, on this run's benchmark split, as the
    evaluation stage does."""
    on_benchmark = {**evaluation, "benchmarks": {params["benchmark_split"]: params["benchmark"]}}

    def rescore(version: str) -> dict[str, float]:
        # a 7B champion is gigabytes: downloaded where it is removed again, and freed after use
        with tempfile.TemporaryDirectory(prefix="champion-") as download:
            uri = f"models:/{params['model_name']}/{version}"
            wrapped = mlflow.pyfunc.load_model(uri, dst_path=download).unwrap_python_model()
            predictions = predict(wrapped.fakevlm, manifest, on_benchmark, wrapped.question)
        return benchmark_metrics(compute_metrics(predictions), params["benchmark"])

    return rescore


def folder_with_card(model_dir: str, model_card: str, target: Path) -> Path:
    """`model_dir`'s files (hard links where the file system allows: a 7B is 14 GB) with the model
    card as README.md, in `target`: the registered model carries its card, the trained folder
    (the training stage's DVC output) stays as training wrote it."""
    target.mkdir()
    for source in Path(model_dir).iterdir():
        if source.is_file() and source.name != "README.md":
            try:
                os.link(source, target / source.name)
            except OSError:
                shutil.copy2(source, target / source.name)
    (target / "README.md").write_text(model_card)
    return target


def calibration_temperature(metrics: dict[str, Any], benchmark: str) -> float:
    """Evaluation's temperature (the same for every benchmark; 1 when it calibrated nothing)."""
    return metrics[benchmark].get("calibrated", {}).get("temperature", 1.0)


def register_model(
    fakevlm_model: FakeVLM,
    metrics: dict[str, Any],
    validated_manifest: pd.DataFrame,
    params: dict[str, Any],
    evaluation: dict[str, Any],
    model_card: str,
) -> dict[str, Any]:
    """Log and register the model with its card and the prompt it was saved with; the returned
    decision record says whether it was promoted."""
    scalar_metrics = benchmark_metrics(metrics, params["benchmark"])
    data_hash = evaluation_data_hash(validated_manifest, params["benchmark_split"])
    with open_image(validated_manifest["image_path"].iloc[0]) as image:
        example = image.convert("RGB")
    # kedro-mlflow opens one run per `kedro run`; outside it (a notebook, a test) open our own
    started = mlflow.active_run() is None
    uri = mlflow.get_tracking_uri()
    if started:
        with server_failures(uri, "starting a run"):
            mlflow.start_run(run_name="registry")
    try:
        with server_failures(uri, "storing the model's artifacts; nothing was registered"):
            source = Path(fakevlm_model.source_dir)
            with tempfile.TemporaryDirectory(prefix=".registered-", dir=source.parent) as staging:
                model_dir = folder_with_card(str(source), model_card, Path(staging) / source.name)
                model_uri = log_model_artifacts(str(model_dir), fakevlm_model.question, fakevlm_model.max_new_tokens,
                                                calibration_temperature(metrics, params["benchmark"]), example)
            mlflow.log_metrics({f"{RUN_METRIC_PREFIX}{params['benchmark']}.{k}": v for k, v in scalar_metrics.items()})
        with server_failures(uri, f"registering and promoting model {params['model_name']!r}"):
            decision = promote_if_better(MlflowClient(), model_uri, scalar_metrics, data_hash, params,
                                         champion_scorer(validated_manifest, params, evaluation))
            decision["benchmark"] = params["benchmark"]
            decision["run_id"] = mlflow.active_run().info.run_id
            mlflow.log_dict(decision, "registry_decision.json")
    except BaseException:
        if started:   # the server may be gone: ending the run must not hide why it failed
            with contextlib.suppress(Exception):
                mlflow.end_run("FAILED")
        raise
    if started:
        mlflow.end_run()
    return decision
