"""`kedro run` end to end, as a user runs it, on a copy of the project shrunk to seconds."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys

import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient
from transformers import AutoProcessor, LlavaForConditionalGeneration

from fakevlm.launch import environment_without_launcher
from fakevlm.pipeline_registry import STAGES

from .bad_inputs import write_bad_sources
from .conftest import PROJECT_ROOT

# conf/local of the copy: the same stages, on a few images and a few steps
TINY = {
    "ingestion": {"fakeclue_mini": {"per_category": {"train": 4, "test": 2}}},
    "training": {
        "model": {
            "tokenizer_vocab_size": 300,
            "vision": {"hidden_size": 32, "intermediate_size": 64, "num_layers": 2, "num_heads": 2},
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

pytestmark = pytest.mark.e2e


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


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return copy_project(tmp_path_factory.mktemp("project"), TINY)


def kedro_run(project, *args, expect_success: bool = True):
    # Training tests in this process leave RANK/MASTER_PORT set (their process group still holds
    # the port); inherited, they would make the run join that port instead of picking a free one.
    env = environment_without_launcher()
    env.update(MLFLOW_TRACKING_URI=f"sqlite:///{project / 'mlflow.db'}", KEDRO_DISABLE_TELEMETRY="true")
    result = subprocess.run(
        [sys.executable, "-m", "kedro", "run", *args], cwd=project, env=env, capture_output=True, text=True, timeout=900
    )
    assert (result.returncode == 0) == expect_success, failure_excerpt(result.stdout + result.stderr)
    return result


def failure_excerpt(output: str) -> str:
    """The node's own error (Kedro logs it before the hooks' noise), else the tail of the log."""
    lines = output.splitlines()
    for i, line in enumerate(lines):
        if "failed with error" in line or "Traceback" in line:
            return "\n".join(lines[max(0, i - 5) : i + 80])
    return "\n".join(lines[-80:])


def test_kedro_run_end_to_end_then_each_pipeline_alone(project):
    kedro_run(project)

    metrics = json.loads((project / "data/08_reporting/metrics.json").read_text())["fakeclue_mini_test"]
    assert metrics["n"] == 7 * 2
    for key in ("accuracy", "f1", "rouge_l", "css"):
        assert 0.0 <= metrics[key] <= 1.0
        assert set(metrics["per_category"]) == {"animal", "human", "object", "scene", "satellite", "doc", "deepfake"}
        assert all(key in per for per in metrics["per_category"].values())
    assert 0.0 <= metrics["baseline_cnn"]["accuracy"] <= 1.0 and metrics["baseline_cnn"]["n"] == 7 * 2

    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    champion = client.get_model_version_by_alias("fakevlm", "champion")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert [r.info.run_id for r in runs] == [champion.run_id]  # one `kedro run`, one MLflow run
    run = client.get_run(champion.run_id)
    assert run.data.params["training.stages.instruction.max_steps"] == "2"  # kedro-mlflow logged params
    assert "evaluation.fakeclue_mini_test.accuracy" in run.data.metrics
    assert "training.instruction.loss" in run.data.metrics
    assert "training.instruction.samples_per_second" in run.data.metrics
    manifest = project / "data/05_model_input/validated_manifest.parquet"
    assert run.data.tags["data.validated_manifest.md5"] == hashlib.md5(manifest.read_bytes()).hexdigest()
    logged = [a.path for a in client.list_artifacts(run.info.run_id, "deepspeed/instruction")]
    assert logged == ["deepspeed/instruction/zero2.json"]

    model_dir = project / "data/06_models/fakevlm"
    assert (model_dir / "model.safetensors").is_file()
    LlavaForConditionalGeneration.from_pretrained(model_dir)
    AutoProcessor.from_pretrained(model_dir)

    for name in STAGES:
        kedro_run(project, "--pipelines", name)
    decision = json.loads((project / "data/08_reporting/registry_decision.json").read_text())
    assert decision["version"] == "2" and decision["model_name"] == "fakevlm"


def test_kedro_run_on_bad_input_accounts_for_every_record(tmp_path):
    sources, rejected_by_ingestion = write_bad_sources(tmp_path / "raw")
    project = copy_project(tmp_path / "project", {"ingestion": {"sources": sources}})

    kedro_run(project, "--pipelines", "ingestion")
    ingestion = json.loads((project / "data/08_reporting/ingestion_summary.json").read_text())
    assert ingestion["quarantined"] == rejected_by_ingestion
    assert ingestion["records_in"] == ingestion["accepted"] + ingestion["quarantined"] == 6 + rejected_by_ingestion
    assert len(pd.read_parquet(project / "data/03_primary/ingestion_quarantine.parquet")) == rejected_by_ingestion

    kedro_run(project, "--pipelines", "annotation")
    # The default gate tolerates no failing row: the run stops, saying which and why ...
    failed = kedro_run(project, "--pipelines", "validation", expect_success=False)
    output = failed.stdout + failed.stderr
    assert "Data validation failed: 2 of 6 rows" in output
    assert "x/sliver.png" in output and "x/deep16.png" in output
    # ... after saving the summary and the quarantine, which account for every row.
    validation = json.loads((project / "data/08_reporting/validation_summary.json").read_text())
    assert validation["records_in"] == ingestion["accepted"]
    assert validation["accepted"] + validation["quarantined"] == validation["records_in"]
    quarantine = pd.read_parquet(project / "data/03_primary/quarantine.parquet")
    assert sorted(quarantine["id"]) == ["fc/test/x/deep16.png", "fc/test/x/sliver.png"]
    assert quarantine["reason"].str.len().gt(10).all()

    kedro_run(project, "--pipelines", "validation", "--params", "validation.max_failed_fraction=0.5")
    validated = pd.read_parquet(project / "data/05_model_input/validated_manifest.parquet")
    assert len(validated) == validation["accepted"] == 4
