"""`kedro run` end to end, as a user runs it, on a copy of the project shrunk to seconds."""

from __future__ import annotations

import hashlib
import json

import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient
from transformers import (
    AutoModelForImageTextToText,
    AutoProcessor,
    FastVlmForConditionalGeneration,
)

from fakevlm.pipeline_registry import STAGES

from .bad_inputs import write_bad_sources
from .tiny_project import copy_project, kedro_run, tiny_run

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """The copy after its default `kedro run` (shared with the notebook's test)."""
    return tiny_run(tmp_path_factory)


def test_kedro_run_end_to_end_then_each_pipeline_alone(project):
    metrics = json.loads((project / "data/08_reporting/metrics.json").read_text())["fakeclue_mini_test"]
    assert metrics["n"] == 7 * 2
    for key in ("accuracy", "f1", "rouge_l"):
        assert 0.0 <= metrics[key] <= 1.0
    assert -1.0 <= metrics["css"] <= 1.0  # a cosine similarity: a tiny model's mean can dip below 0
    assert set(metrics["per_category"]) == {"animal", "human", "object", "scene", "satellite", "doc", "deepfake"}
    assert all(key in per for per in metrics["per_category"].values() for key in ("accuracy", "f1", "rouge_l", "css"))
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
    # the default: a LLaVA-style FastVLM around MobileNetV2, loaded by transformers' auto class
    assert isinstance(AutoModelForImageTextToText.from_pretrained(model_dir), FastVlmForConditionalGeneration)
    AutoProcessor.from_pretrained(model_dir)

    for name in STAGES:
        kedro_run(project, "--pipelines", name)
    decision = json.loads((project / "data/08_reporting/registry_decision.json").read_text())
    assert decision["version"] == "2" and decision["model_name"] == "fakevlm"


def test_crossgen_pipeline_writes_the_grid(project):
    """`kedro run --pipelines crossgen` (after the default run, which it does not belong to)."""
    (project / "conf/local/parameters_crossgen.yml").write_text(
        yaml.safe_dump({"crossgen": {"train_families": ["checkerboard", "splice"]}}))
    kedro_run(project, "--pipelines", "crossgen")
    grid = pd.read_csv(project / "data/08_reporting/crossgen/grid.csv")
    validated = pd.read_parquet(project / "data/05_model_input/validated_manifest.parquet")
    tested = validated[validated["split"].isin(["test", "test_heldout", "test_heldout_generator"])]
    families = sorted(tested["artifact_family"].dropna().unique())
    assert grid[["train_family", "test_family"]].values.tolist() == [[t, f] for t in ["checkerboard", "splice"]
                                                                     for f in families]
    assert grid["accuracy"].between(0, 1).all()
    assert (project / "data/08_reporting/crossgen/heatmap.png").stat().st_size > 1000


def test_kedro_run_on_bad_input_accounts_for_every_record(tmp_path):
    sources, rejected_by_ingestion = write_bad_sources(tmp_path / "raw")
    project = copy_project(tmp_path / "project", {"ingestion": {"sources": sources}})

    kedro_run(project, "--pipelines", "ingestion")
    ingestion = json.loads((project / "data/08_reporting/ingestion_summary.json").read_text())
    assert ingestion["quarantined"] == rejected_by_ingestion
    assert ingestion["records_in"] == ingestion["accepted"] + ingestion["quarantined"] == 6 + rejected_by_ingestion
    assert len(pd.read_parquet(project / "data/03_primary/ingestion_quarantine.parquet")) == rejected_by_ingestion

    kedro_run(project, "--pipelines", "annotation")
    # the FakeClue records keep their own answers; the one without an answer, about which the
    # grounded annotator can say nothing, keeps its verdict alone (it counts for accuracy only)
    annotation = json.loads((project / "data/08_reporting/annotation_summary.json").read_text())
    assert annotation["rows_in"] == ingestion["accepted"] == annotation["annotated"] + annotation["quarantined"]
    assert annotation["quarantined"] == 0 and annotation["verdict_only"] == 1
    annotated = pd.read_parquet(project / "data/03_primary/annotated_manifest.parquet").set_index("id")
    unexplained = annotated.loc["fc/test/ff++/fake/Deepfakes/c23/frames/071_054/160.png"]
    assert not unexplained["explained"] and unexplained["answer"] == "This is a fake image."
    # The default gate tolerates no failing row: the run stops, saying which and why ...
    failed = kedro_run(project, "--pipelines", "validation", expect_success=False)
    output = failed.stdout + failed.stderr
    assert "Data validation failed: 2 of 6 rows" in output
    assert "x/sliver.png" in output and "x/deep16.png" in output
    # ... after saving the summary and the quarantine, which account for every row.
    validation = json.loads((project / "data/08_reporting/validation_summary.json").read_text())
    assert validation["records_in"] == annotation["annotated"]
    assert validation["accepted"] + validation["quarantined"] == validation["records_in"]
    quarantine = pd.read_parquet(project / "data/03_primary/quarantine.parquet")
    assert sorted(quarantine["id"]) == ["fc/test/x/deep16.png", "fc/test/x/sliver.png"]
    assert quarantine["reason"].str.len().gt(10).all()

    kedro_run(project, "--pipelines", "validation", "--params", "validation.max_failed_fraction=0.5")
    validated = pd.read_parquet(project / "data/05_model_input/validated_manifest.parquet")
    assert len(validated) == validation["accepted"] == 4
