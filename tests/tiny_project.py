"""A copy of the project shrunk to seconds, and `kedro run` in it as a user runs it.

The tiny default run takes minutes on two cores, so `tiny_run` makes it once per test session
for the tests that need one: the end-to-end test (which then reruns each pipeline in it, each
rewriting its own outputs) and the notebook's.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from fakevlm.launch import environment_without_launcher

from .conftest import PROJECT_ROOT

# conf/local of the copy: the same stages, on a few images and a few steps
TINY = {
    "ingestion": {"fakeclue_mini": {"per_category": {"train": 4, "val": 2, "test": 2}}},
    "training": {
        "model": {
            "tokenizer_vocab_size": 300,
            "text": {"hidden_size": 32, "intermediate_size": 64, "num_layers": 1, "num_heads": 2},
        },
        "stages": {
            "vision_warmup": {"max_steps": 2, "per_device_train_batch_size": 4, "logging_steps": 1},
            "instruction": {"max_steps": 2, "per_device_train_batch_size": 4, "logging_steps": 1},
        },
    },
    "baseline": {"model": {"width": 4}, "train": {"max_steps": 2, "logging_steps": 1}},
    "evaluation": {"max_new_tokens": 8},
}

_tiny_runs: dict[str, Path] = {}


def copy_project(root, local_parameters: dict):
    """The project's code and config under root, with conf/local/parameters.yml = local_parameters."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(PROJECT_ROOT / "pyproject.toml", root)
    shutil.copytree(PROJECT_ROOT / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copytree(PROJECT_ROOT / "conf", root / "conf", ignore=shutil.ignore_patterns("credentials.yml"))
    for layer in ("01_raw", "02_intermediate", "03_primary", "05_model_input", "06_models", "07_model_output", "08_reporting"):
        (root / "data" / layer).mkdir(parents=True)
    (root / "conf" / "local" / "parameters.yml").write_text(yaml.safe_dump(local_parameters))
    return root


def project_environment(project) -> dict[str, str]:
    """The environment of a process working in `project`: its own MLflow store, no telemetry."""
    # Training tests in this process leave RANK/MASTER_PORT set (their process group still holds
    # the port); inherited, they would make the run join that port instead of picking a free one.
    env = environment_without_launcher()
    env.update(MLFLOW_TRACKING_URI=f"sqlite:///{project / 'mlflow.db'}", KEDRO_DISABLE_TELEMETRY="true")
    return env


def kedro_run(project, *args, expect_success: bool = True):
    result = subprocess.run(
        [sys.executable, "-m", "kedro", "run", *args],
        cwd=project, env=project_environment(project), capture_output=True, text=True, timeout=900, check=False,
    )
    assert (result.returncode == 0) == expect_success, failure_excerpt(result.stdout + result.stderr)
    return result


def failure_excerpt(output: str) -> str:
    """The node's own error (Kedro logs it before the hooks' noise) and the log's tail, where a
    long traceback ends with the exception's message."""
    lines = output.splitlines()
    for i, line in enumerate(lines):
        if "failed with error" in line or "Traceback" in line:
            head = lines[max(0, i - 5) : i + 80]
            return "\n".join([*head, "...", *lines[max(i + 80, len(lines) - 30) :]])
    return "\n".join(lines[-80:])


def tiny_run(tmp_path_factory) -> Path:
    """A copy of the project after one default `kedro run` with TINY, made once per session."""
    if "project" not in _tiny_runs:
        project = copy_project(tmp_path_factory.mktemp("tiny_run"), TINY)
        kedro_run(project)
        _tiny_runs["project"] = project
        _tiny_runs["digests"] = output_digests(project)  # before any test reruns a pipeline in it
    return _tiny_runs["project"]


def tiny_run_digests(tmp_path_factory) -> dict[str, str]:
    """`output_digests` of the tiny run, as its `kedro run` left them."""
    tiny_run(tmp_path_factory)
    return _tiny_runs["digests"]


def dvc_outputs() -> list[str]:
    """Every path dvc.yaml declares as a stage's output, metric or plot."""
    stages = yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())["stages"]
    return [next(iter(out)) if isinstance(out, dict) else out
            for stage in stages.values() for kind in ("outs", "metrics", "plots") for out in stage.get(kind, [])]


def output_digests(project: Path) -> dict[str, str]:
    """md5 of every file of every DVC output in `project`, by path relative to it."""
    files = []
    for output in dvc_outputs():
        path = project / output
        assert path.exists(), f"{output}: declared in dvc.yaml but not written"
        files += sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return {p.relative_to(project).as_posix(): hashlib.md5(p.read_bytes()).hexdigest() for p in files}
