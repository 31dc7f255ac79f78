"""The orchestrator specs generated from the pipeline registry (fakevlm.deploy): the committed
ones are the generator's output, and the Argo spec is one Argo accepts."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from fakevlm import deploy
from fakevlm.pipeline_registry import STAGES

from .conftest import PROJECT_ROOT

COMMITTED = {"argo": PROJECT_ROOT / "pipelines" / "argo-workflow.yaml",
             "kfp": PROJECT_ROOT / "pipelines" / "kfp-pipeline.yaml"}
GENERATE = {"argo": deploy.argo_yaml, "kfp": deploy.kfp_yaml}


@pytest.mark.parametrize("spec", sorted(COMMITTED))
def test_committed_spec_is_what_the_pipelines_generate(spec):
    generated = GENERATE[spec](PROJECT_ROOT, "gpu")
    assert generated == COMMITTED[spec].read_text(), (
        f"{COMMITTED[spec].name} differs from what the pipelines generate; "
        f"regenerate it: fakevlm deploy {spec} --env gpu --output {COMMITTED[spec].relative_to(PROJECT_ROOT)}")


def argo_round_trip(workflow: dict) -> dict:
    """The workflow through Argo's own models (hera's, generated from Argo's OpenAPI schema): a
    wrong type fails; an unknown key is dropped, so the round trip differs."""
    from hera.workflows.models import Workflow

    return Workflow.model_validate(workflow).model_dump(exclude_none=True, by_alias=True)


@pytest.mark.parametrize("by", ["stage", "node"])
def test_argo_workflow_passes_argo_schema(by):
    workflow = yaml.safe_load(deploy.argo_yaml(PROJECT_ROOT, "gpu", by))
    assert argo_round_trip(workflow) == workflow


def test_argo_schema_check_catches_what_argo_rejects():
    workflow = yaml.safe_load(COMMITTED["argo"].read_text())
    number = yaml.safe_load(COMMITTED["argo"].read_text())
    number["spec"]["templates"][1]["container"]["resources"] = {"limits": {"nvidia.com/gpu": 8}}
    with pytest.raises(ValueError, match="valid string"):
        argo_round_trip(number)
    workflow["spec"]["templates"][1]["container"]["volumeMount"] = []   # a typo Argo would ignore
    assert argo_round_trip(workflow) != workflow


def test_a_step_per_stage_after_the_stages_it_reads_from():
    steps = {step.name: step for step in deploy.steps(PROJECT_ROOT, "gpu")}
    assert list(steps) == list(STAGES)
    assert steps["ingestion"].dependencies == []
    assert steps["annotation"].dependencies == ["ingestion"]
    assert steps["training"].dependencies == ["validation"]
    assert "training" in steps["evaluation"].dependencies
    assert "evaluation" in steps["registry"].dependencies
    assert steps["training"].kedro_args == ["--pipelines", "training"]
    # the GPU recipe's launcher runs 8 processes, one per GPU; only the steps tagged gpu ask for them
    assert {name: step.gpus for name, step in steps.items() if step.gpus} == {"training": 8, "evaluation": 8}
    assert {step.name: step.gpus for step in deploy.steps(PROJECT_ROOT, "local") if step.gpus} == {
        "training": 1, "evaluation": 1}   # the tiny default trains in the Kedro process


def test_a_step_per_node_follows_the_nodes_that_write_its_inputs():
    steps = {step.name: step for step in deploy.steps(PROJECT_ROOT, "gpu", by="node")}
    assert steps["training-train-fakevlm"].kedro_args == ["--pipelines", "training", "--nodes", "train_fakevlm"]
    assert steps["training-train-fakevlm"].gpus == 8 and steps["training-train-baseline"].gpus == 0
    assert "training-train-fakevlm" in steps["evaluation-evaluate"].dependencies
    assert "training-train-baseline" in steps["evaluation-evaluate-baseline"].dependencies
    assert "training-train-fakevlm" not in steps["evaluation-evaluate-baseline"].dependencies


def test_every_step_joins_the_workflows_mlflow_run():
    workflow = yaml.safe_load(COMMITTED["argo"].read_text())
    tasks = {task["name"]: task for task in workflow["spec"]["templates"][0]["dag"]["tasks"]}
    templates = {template["name"]: template for template in workflow["spec"]["templates"][1:]}
    assert templates["mlflow-run"]["container"]["command"][:3] == ["fakevlm", "deploy", "mlflow-run"]
    for stage in STAGES:
        assert "mlflow-run" in tasks[stage]["dependencies"]
        container = templates[stage]["container"]
        assert container["command"] == ["kedro", "run", "--pipelines", stage, "--env", "gpu"]
        assert {"name": "MLFLOW_RUN_ID", "value": "{{inputs.parameters.mlflow-run-id}}"} in container["env"]
        assert container["volumeMounts"] == [{"name": "data", "mountPath": "/app/data"}]


def test_fakevlm_deploy_prints_the_spec_alone():
    result = subprocess.run([sys.executable, "-m", "fakevlm.console", "deploy", "argo", "--env", "gpu"],
                            cwd=PROJECT_ROOT, capture_output=True, text=True, check=True)
    assert result.stdout == COMMITTED["argo"].read_text()   # Kedro's log goes to the standard error
