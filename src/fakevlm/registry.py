"""The MLflow model registry: log a trained FakeVLM, register it, promote it when it is better."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from PIL import Image

import fakevlm
from fakevlm.serving import FakeVLMPyfunc, encode_image

log = logging.getLogger(__name__)

METRIC_TAG = "metric."
DATA_TAG = "evaluation_data_hash"   # the evaluation split the metrics were measured on
BENCHMARK_TAG = "benchmark"
GATE_TAG = "gate"                   # the promotion gate's decision and why
RUN_METRIC_PREFIX = "evaluation."   # the run's full metrics: evaluation.<benchmark>.<metric>, as the evaluation stage logs them
LOCK_SUFFIX = ".promotion-lock"
TAG_VALUE_LIMIT = 5000              # MLflow's limit on a tag value


class RegistryError(RuntimeError):
    """The MLflow server failed or refused a registry step; the message says what is left behind."""


CREDENTIALS_HINT = ("set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD, or `mlflow_credentials` in "
                    "conf/local/credentials.yml")


@contextlib.contextmanager
def server_failures(uri: str, doing: str) -> Iterator[None]:
    """MLflow's failures while `doing` as a RegistryError naming the server, the step and the fix,
    with what the step left behind (the notes added on the way)."""
    try:
        yield
    except MlflowException as error:
        text = str(error)
        if error.error_code == "UNAUTHENTICATED":   # HTTP 401
            cause = f"the server refused the credentials ({CREDENTIALS_HINT})"
        elif error.error_code == "PERMISSION_DENIED":   # HTTP 403
            cause = "this user may not change the model (an admin grants EDIT or MANAGE on it)"
        elif any(sign in text for sign in ("NewConnectionError", "Connection refused", "Connection aborted",
                                             "RemoteDisconnected", "ConnectionResetError")):
            cause = "the server is unreachable"
        else:
            cause = "the server failed"
        notes = "".join(f"; {note}" for note in getattr(error, "__notes__", []))
        raise RegistryError(f"MLflow at {uri}: {cause} while {doing}{notes}. ({text[:600]})") from error


def alias_version(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    """The version behind `alias`; None if there is none. (Searched: with authentication on, asking
    for an alias of a model that does not exist yet is refused, 403, rather than not found.)"""
    found = client.search_registered_models(f"name = '{name}'")
    version = found[0].aliases.get(alias) if found else None
    return None if version is None else client.get_model_version(name, version)


def run_metrics(client: MlflowClient, run_id: str | None, benchmark: str) -> dict[str, float]:
    """One benchmark's full metrics as logged on the run a version was registered from."""
    if not run_id:
        return {}
    prefix = f"{RUN_METRIC_PREFIX}{benchmark}."
    return {k[len(prefix):]: v for k, v in client.get_run(run_id).data.metrics.items() if k.startswith(prefix)}


def log_model_artifacts(model_dir: str, question: str, max_new_tokens: int, temperature: float,
                        example: Image.Image) -> str:
    """Log the model folder as a pyfunc in the active run, with its prompt and the temperature that
    calibrates its fake probability; returns its model URI. Nothing is registered: MLflow raises
    before returning when a file does not reach the store."""
    info = mlflow.pyfunc.log_model(
        name="model",
        python_model=FakeVLMPyfunc(question, max_new_tokens, temperature),
        artifacts={"hf_dir": model_dir},
        code_paths=[str(Path(fakevlm.__file__).parent)],
        input_example=pd.DataFrame({"image": [encode_image(example)]}),
        pip_requirements=_requirements(),
    )
    return info.model_uri


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


@contextlib.contextmanager
def promotion_lock(client: MlflowClient, name: str, params: dict[str, Any]) -> Iterator[None]:
    """Hold the registry's promotion lock of model `name` while the block reads and moves aliases.

    Why a lock: MLflow has no compare-and-set on aliases, so two runs that read the same champion
    at once would both promote and the last writer, better or not, would end as champion. The
    lock is a registered model named `<name>.promotion-lock`: creating a registered model whose
    name exists fails (RESOURCE_ALREADY_EXISTS, a unique key in the server's database), so exactly
    one creator holds it; the others poll until it is deleted or `lock_wait_s` passes. Decisions
    are thus made one after the other, each against the champion the previous one left.
    A holder that dies (its server unreachable) leaves the lock: `fakevlm registry unlock` deletes it.
    """
    lock = name + LOCK_SUFFIX
    run = mlflow.active_run()
    holder = {"run_id": run.info.run_id if run else "", "host": socket.gethostname(), "pid": str(os.getpid())}
    deadline = time.monotonic() + float(params["lock_wait_s"])
    while True:
        try:
            client.create_registered_model(lock, tags=holder, description=f"held while a run promotes {name}; "
                                           "`fakevlm registry unlock` deletes it if that run died")
            break
        except MlflowException as error:
            if error.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            if time.monotonic() > deadline:
                held = [found.tags for found in client.search_registered_models(f"name = '{lock}'")]
                raise RegistryError(f"model {name!r}: the promotion lock is still held after {params['lock_wait_s']} s "
                                    f"by {held}; if that run died, `fakevlm registry unlock --name {name}` "
                                    "releases it") from None
            time.sleep(float(params["lock_poll_s"]))
    try:
        yield
    except BaseException as error:
        try:
            client.delete_registered_model(lock)
        except (MlflowException, OSError) as release_error:
            error.add_note(f"the promotion lock {lock!r} is still held ({release_error.__class__.__name__}): "
                           f"`fakevlm registry unlock --name {name}` releases it")
        raise
    client.delete_registered_model(lock)


def unlock(client: MlflowClient, name: str) -> dict[str, Any]:
    """Delete the promotion lock a dead run left behind."""
    lock = name + LOCK_SUFFIX
    found = client.search_registered_models(f"name = '{lock}'")
    if not found:
        raise RegistryError(f"model {name!r} has no promotion lock to release")
    held = found[0].tags
    client.delete_registered_model(lock)
    log.info("model %s: promotion lock held by %s released", name, held)
    return {"model_name": name, "action": "unlock", "held_by": held}


def promote_if_better(
    client: MlflowClient,
    model_uri: str,
    metrics: dict[str, float],
    data_hash: str,
    params: dict[str, Any],
    rescore: Callable[[str], dict[str, float]],
) -> dict[str, Any]:
    """Register the logged model `model_uri` as a new version, make it the challenger, and promote it
    when it beats the champion on the same evaluation data (champion -> previous, challenger -> champion).

    The version is created with its tags in one request (data hash, benchmark, the gate's decision,
    the headline metrics), so it never exists half-tagged; the full metrics stay on its run. A
    champion whose metrics come from other evaluation data (the split or its references changed,
    or it was registered from elsewhere) is scored again on this data with `rescore(version)`.
    Everything from reading the champion to moving the aliases holds the promotion lock.
    Returns the promotion record: both versions' metrics, the data hash, the decision and why.
    """
    name = params["model_name"]
    with promotion_lock(client, name, params):
        champion_version = alias_version(client, name, params["champion_alias"])
        champion, rescored = {}, False
        if champion_version is not None:
            champion = run_metrics(client, champion_version.run_id, params["benchmark"])
            rescored = champion_version.tags.get(DATA_TAG) != data_hash or not champion
            if rescored:
                log.info("champion v%s was evaluated on other data (%s); scoring it on this data (%s)",
                         champion_version.version, champion_version.tags.get(DATA_TAG), data_hash)
                champion = rescore(champion_version.version)
        if champion_version is None:
            reasons, why = [], "no champion yet"
        else:
            reasons = compare(metrics, champion, params)
            why = f"beats champion v{champion_version.version} on {params['primary_metric']} within every guard"
        promoted = not reasons
        reason = why if promoted else "; ".join(reasons)
        gate = f"{'promoted' if promoted else 'refused'}: {reason}"
        tags = {DATA_TAG: data_hash, BENCHMARK_TAG: params["benchmark"], GATE_TAG: gate[:TAG_VALUE_LIMIT],
                **{f"{METRIC_TAG}{k}": str(metrics[k]) for k in params["headline_metrics"] if k in metrics}}
        version = str(mlflow.register_model(model_uri, name, tags=tags).version)
        try:
            client.set_registered_model_alias(name, params["challenger_alias"], version)
            if promoted:
                move_champion(client, name, version, params)
        except (MlflowException, OSError) as error:
            error.add_note(f"model {name!r} v{version} is registered with its artifacts and tags, "
                           f"but @{params['champion_alias']} was not moved to it")
            raise
    log.info("model %s v%s: %s (%s)", name, version, "promoted to @" + params["champion_alias"] if promoted
             else "not promoted", reason)
    return {
        "model_name": name,
        "version": version,
        "promoted": promoted,
        "reason": reason,
        "alias": params["champion_alias"],
        "primary_metric": params["primary_metric"],
        "data_hash": data_hash,
        "metrics": metrics,
        "previous_champion": {"version": champion_version and str(champion_version.version), "metrics": champion,
                              "rescored": rescored},
    }


def move_champion(client: MlflowClient, name: str, version: str, params: dict[str, Any]) -> str | None:
    """Make `version` the champion; the champion it replaces becomes `previous`. Returns that one.
    The caller holds the promotion lock."""
    old = alias_version(client, name, params["champion_alias"])
    if old is not None and str(old.version) == str(version):
        return None
    if old is not None:
        client.set_registered_model_alias(name, params["previous_alias"], old.version)
    client.set_registered_model_alias(name, params["champion_alias"], version)
    return old and str(old.version)


def promote(client: MlflowClient, name: str, version: str, params: dict[str, Any]) -> dict[str, Any]:
    """Make `version` the champion by hand, under the promotion lock."""
    with promotion_lock(client, name, params):
        replaced = move_champion(client, name, version, params)
    return {"model_name": name, "champion": version, "previous": replaced, "action": "promote"}


def rollback(client: MlflowClient, name: str, params: dict[str, Any]) -> dict[str, Any]:
    """`previous` becomes the champion again (and the champion it replaces becomes `previous`)."""
    with promotion_lock(client, name, params):
        previous = alias_version(client, name, params["previous_alias"])
        if previous is None:
            raise ValueError(f"model {name!r} has no @{params['previous_alias']} version to roll back to")
        replaced = move_champion(client, name, previous.version, params)
    log.info("model %s: v%s is @%s again (v%s is @%s)", name, previous.version, params["champion_alias"], replaced,
             params["previous_alias"])
    return {"model_name": name, "champion": str(previous.version), "previous": replaced, "action": "rollback"}
