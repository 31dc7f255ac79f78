"""Registry: register the trained model in MLflow, promote it when it beats the champion."""

from __future__ import annotations

from typing import Any

import mlflow
import pandas as pd
from mlflow import MlflowClient

from fakevlm.formats import open_image
from fakevlm.model import FakeVLM
from fakevlm.registry import log_and_register, promote_if_better


def register_model(
    fakevlm_model: FakeVLM, metrics: dict[str, Any], validated_manifest: pd.DataFrame, params: dict[str, Any], question: str
) -> dict[str, Any]:
    """Log and register the model; the returned decision record says whether it was promoted."""
    benchmark = metrics[params["benchmark"]]
    scalar_metrics = {k: float(v) for k, v in benchmark.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    with open_image(validated_manifest["image_path"].iloc[0]) as image:
        example = image.convert("RGB")
    # kedro-mlflow opens one run per `kedro run`; outside it (a notebook, a test) open our own
    started = mlflow.active_run() is None
    if started:
        mlflow.start_run(run_name="registry")
    try:
        version = log_and_register(fakevlm_model.source_dir, params["model_name"], question, params["max_new_tokens"], example)
        decision = promote_if_better(MlflowClient(), params["model_name"], version, scalar_metrics, params)
        decision["benchmark"] = params["benchmark"]
        decision["run_id"] = mlflow.active_run().info.run_id
        mlflow.log_dict(decision, "registry_decision.json")
    finally:
        if started:
            mlflow.end_run()
    return decision
