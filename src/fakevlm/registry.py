"""The MLflow model registry: log a trained FakeVLM, register it, promote it when it is better."""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable
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
DATA_TAG = "evaluation_data_hash"   # the evaluation split the metrics were measured on


def version_metrics(client: MlflowClient, name: str, alias: str) -> tuple[str | None, dict[str, float], dict[str, str]]:
    """The version behind `alias`, the metrics it was registered with and its tags; None if none."""
    try:
        version = client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None, {}, {}
    metrics = {k[len(METRIC_TAG) :]: float(v) for k, v in version.tags.items() if k.startswith(METRIC_TAG)}
    return str(version.version), metrics, dict(version.tags)


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


def compare(challenger: dict[str, float], champion: dict[str, float], params: dict[str, Any]) -> list[str]:
    """Why the challenger may not replace the champion; empty when it may.

    The primary metric must improve by more than `min_improvement`; no guarded metric may get worse
    by more than its tolerance (`lower_is_better` for metrics such as ECE). A guard whose key
    ends in `*` (per_category.*.accuracy) covers every category the champion was scored on.
    """
    primary, margin = params["primary_metric"], float(params["min_improvement"])
    failures = []
    if challenger[primary] - champion[primary] <= margin:
        failures.append(f"{primary} {challenger[primary]:.4f} does not beat the champion's {champion[primary]:.4f} "
                        f"by more than {margin}")
    for guard in params["guards"]:
        pattern = re.compile("^" + re.escape(guard["metric"]).replace(r"\*", "[^.]+") + "$")
        sign = -1.0 if guard.get("lower_is_better") else 1.0
        for key in sorted(k for k in champion if pattern.match(k)):
            if key not in challenger or math.isnan(challenger[key]) or math.isnan(champion[key]):
                continue
            regression = sign * (champion[key] - challenger[key])
            if regression > guard["tolerance"]:
                failures.append(f"{key} {challenger[key]:.4f} is worse than the champion's {champion[key]:.4f} "
                                f"by more than {guard['tolerance']}")
    return failures


def promote_if_better(
    client: MlflowClient,
    name: str,
    version: str,
    metrics: dict[str, float],
    data_hash: str,
    params: dict[str, Any],
    rescore: Callable[[str], dict[str, float]],
) -> dict[str, Any]:
    """Tag the new version with its metrics, make it the challenger, and promote it when it beats
    the champion on the same evaluation data (champion -> previous, challenger -> champion).

    A champion registered with metrics from other evaluation data (the split or its references
    changed) is scored again on this data with `rescore(version)` before the comparison.
    Returns the promotion record: both versions' metrics, the data hash, the decision and why.
    """
    for key, value in metrics.items():
        client.set_model_version_tag(name, version, f"{METRIC_TAG}{key}", str(value))
    client.set_model_version_tag(name, version, DATA_TAG, data_hash)
    client.set_registered_model_alias(name, params["challenger_alias"], version)
    champion_version, champion, tags = version_metrics(client, name, params["champion_alias"])
    rescored = champion_version is not None and tags.get(DATA_TAG) != data_hash
    if rescored:
        log.info("champion v%s was evaluated on other data (%s); scoring it on this data (%s)", champion_version,
                 tags.get(DATA_TAG), data_hash)
        champion = rescore(champion_version)
    if champion_version is None:
        reasons = []
        why = "no champion yet"
    else:
        reasons = compare(metrics, champion, params)
        why = f"beats champion v{champion_version} on {params['primary_metric']} within every guard"
    promoted = not reasons
    if promoted:
        move_champion(client, name, version, params)
    log.info("model %s v%s: %s (%s)", name, version, "promoted to @" + params["champion_alias"] if promoted
             else "not promoted", why if promoted else "; ".join(reasons))
    return {
        "model_name": name,
        "version": version,
        "promoted": promoted,
        "reason": why if promoted else "; ".join(reasons),
        "alias": params["champion_alias"],
        "primary_metric": params["primary_metric"],
        "data_hash": data_hash,
        "metrics": metrics,
        "previous_champion": {"version": champion_version, "metrics": champion, "rescored": rescored},
    }


def move_champion(client: MlflowClient, name: str, version: str, params: dict[str, Any]) -> str | None:
    """Make `version` the champion; the champion it replaces becomes `previous`. Returns that one."""
    old, _, _ = version_metrics(client, name, params["champion_alias"])
    if old == version:
        return None
    if old is not None:
        client.set_registered_model_alias(name, params["previous_alias"], old)
    client.set_registered_model_alias(name, params["champion_alias"], version)
    return old


def rollback(client: MlflowClient, name: str, params: dict[str, Any]) -> dict[str, Any]:
    """`previous` becomes the champion again (and the champion it replaces becomes `previous`)."""
    previous, _, _ = version_metrics(client, name, params["previous_alias"])
    if previous is None:
        raise ValueError(f"model {name!r} has no @{params['previous_alias']} version to roll back to")
    replaced = move_champion(client, name, previous, params)
    log.info("model %s: v%s is @%s again (v%s is @%s)", name, previous, params["champion_alias"], replaced,
             params["previous_alias"])
    return {"model_name": name, "champion": previous, "previous": replaced, "action": "rollback"}
