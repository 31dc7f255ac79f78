"""The MLflow model registry: log a trained FakeVLM, register it, promote it when it is better."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from PIL import Image

import fakevlm
from fakevlm.serving import FakeVLMPyfunc, encode_image

log = logging.getLogger(__name__)

METRIC_TAG = "metric."


def champion_metrics(client: MlflowClient, name: str, alias: str) -> tuple[str | None, dict[str, float]]:
    """The champion's version and the metrics it was registered with; (None, {}) if none."""
    try:
        version = client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None, {}
    metrics = {k[len(METRIC_TAG) :]: float(v) for k, v in version.tags.items() if k.startswith(METRIC_TAG)}
    return str(version.version), metrics


def log_and_register(model_dir: str, name: str, question: str, max_new_tokens: int, example: Image.Image) -> str:
    """Log the model folder as a pyfunc in the active run and register it; returns the version."""
    info = mlflow.pyfunc.log_model(
        name="model",
        python_model=FakeVLMPyfunc(question, max_new_tokens),
        artifacts={"hf_dir": model_dir},
        code_paths=[str(Path(fakevlm.__file__).parent)],
        input_example=pd.DataFrame({"image": [encode_image(example)]}),
        pip_requirements=_requirements(),
        registered_model_name=name,
    )
    return str(info.registered_model_version)


def _requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{pkg}=={version(pkg)}" for pkg in ("torch", "transformers", "tokenizers", "pillow", "pandas", "mlflow", "sentence-transformers", "rouge-score", "scikit-learn")]


def promote_if_better(
    client: MlflowClient, name: str, version: str, metrics: dict[str, float], params: dict[str, Any]
) -> dict[str, Any]:
    """Record the version's metrics on it and move the champion alias if it is at least as good."""
    for key, value in metrics.items():
        client.set_model_version_tag(name, version, f"{METRIC_TAG}{key}", str(value))
    alias = params["champion_alias"]
    primary = params["primary_metric"]
    champion_version, champion = champion_metrics(client, name, alias)
    if champion_version is None:
        promoted, reason = True, "no champion yet"
    elif primary not in champion:
        promoted, reason = True, f"champion v{champion_version} has no {primary}"
    elif metrics[primary] >= champion[primary]:
        promoted, reason = True, f"{primary} {metrics[primary]:.4f} >= champion v{champion_version}'s {champion[primary]:.4f}"
    else:
        promoted, reason = False, f"{primary} {metrics[primary]:.4f} < champion v{champion_version}'s {champion[primary]:.4f}"
    if promoted:
        client.set_registered_model_alias(name, alias, version)
    log.info("model %s v%s: %s (%s)", name, version, "promoted to @" + alias if promoted else "not promoted", reason)
    return {
        "model_name": name,
        "version": version,
        "promoted": promoted,
        "reason": reason,
        "alias": alias,
        "primary_metric": primary,
        "metrics": metrics,
        "previous_champion": {"version": champion_version, "metrics": champion},
    }
