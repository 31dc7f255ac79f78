"""Registry: register the trained model in MLflow, promote it when it beats the champion."""

from __future__ import annotations

import hashlib
from typing import Any

import mlflow
import pandas as pd
from mlflow import MlflowClient

from fakevlm.formats import open_image
from fakevlm.metrics import flatten_metrics
from fakevlm.model import FakeVLM
from fakevlm.registry import log_and_register, promote_if_better
from fakevlm.training import split_rows


def evaluation_data_hash(manifest: pd.DataFrame, split: str) -> str:
    """A hash of the evaluation split's content (ids, image bytes' sha256, labels), order-free."""
    rows = split_rows(manifest, split).sort_values("id")
    text = "\n".join(f"{r.id}\t{r.sha256}\t{r.label}" for r in rows.itertuples(index=False))
    return hashlib.sha256(text.encode()).hexdigest()


def register_model(
    fakevlm_model: FakeVLM, metrics: dict[str, Any], validated_manifest: pd.DataFrame, params: dict[str, Any], question: str
) -> dict[str, Any]:
    """Log and register the model; the returned decision record says whether it was promoted."""
    benchmark = {k: v for k, v in metrics[params["benchmark"]].items() if k != "baseline_cnn"}
    scalar_metrics = flatten_metrics(benchmark)
    data_hash = evaluation_data_hash(validated_manifest, params["benchmark_split"])
    with open_image(validated_manifest["image_path"].iloc[0]) as image:
        example = image.convert("RGB")
    # kedro-mlflow opens one run per `kedro run`; outside it (a notebook, a test) open our own
    started = mlflow.active_run() is None
    if started:
        mlflow.start_run(run_name="registry")
    try:
        version = log_and_register(fakevlm_model.source_dir, params["model_name"], question, params["max_new_tokens"], example)
        decision = promote_if_better(MlflowClient(), params["model_name"], version, scalar_metrics, data_hash, params)
        decision["benchmark"] = params["benchmark"]
        decision["run_id"] = mlflow.active_run().info.run_id
        mlflow.log_dict(decision, "registry_decision.json")
    finally:
        if started:
            mlflow.end_run()
    return decision
