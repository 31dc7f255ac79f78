"""`make gpu-smoke`: conf/gpu's path (LLaVA-1.5 layout, 336 px, torchrun, ZeRO-2, gradient
checkpointing, loader workers) end to end on this CPU, on a copy of the project."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml
from mlflow import MlflowClient
from transformers import AutoModelForImageTextToText, LlavaForConditionalGeneration

from .tiny_project import copy_project, failure_excerpt, project_environment

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    project = copy_project(tmp_path_factory.mktemp("gpu_smoke"), {})
    result = subprocess.run([sys.executable, "-m", "fakevlm.smoke"], cwd=project, env=project_environment(project),
                            capture_output=True, text=True, timeout=1200, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, failure_excerpt(output)
    return project, output


def test_gpu_env_runs_every_stage_on_the_llava_1_5_shaped_checkpoint(smoke):
    project, output = smoke
    smoke_conf = yaml.safe_load((project / "conf/smoke/gpu_smoke.yml").read_text())
    # training: 2 torchrun ranks (gloo), each through conf/gpu's steps, images decoded as drawn
    history = json.loads((project / "data/06_models/training_history.json").read_text())
    steps = smoke_conf["overrides"]["training.stages.instruction.max_steps"]
    assert history["ranks"] == [{"rank": r, "world_size": 2, "steps": {"instruction": steps}} for r in (0, 1)]
    assert "gradient checkpointing" in output   # transformers turns the KV cache off under it
    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    params = run.data.params
    assert params["training.stages.instruction.activation_checkpointing"] == "True"
    assert params["training.cache_pixels"] == "False" and params["training.max_length"] == "1024"
    assert params["training.stages.instruction.deepspeed"] == "conf/base/deepspeed/zero2.json"
    # 576 image tokens + prompt + answer within 1024, as the encoder logged
    longest = int(output.split("longest ")[1].split(" tokens")[0])
    assert 576 < longest <= 1024

    model_dir = project / "data/06_models/fakevlm"
    model = AutoModelForImageTextToText.from_pretrained(model_dir)
    assert isinstance(model, LlavaForConditionalGeneration) and model.config.image_seq_length == 576
    # evaluation: every FakeClue-format test image answered; registry: the first version is champion
    metrics = json.loads((project / "data/08_reporting/metrics.json").read_text())
    assert metrics["fakeclue_test"]["n"] == 7 * smoke_conf["data"]["per_category"]["test"]
    decision = json.loads((project / "data/08_reporting/registry_decision.json").read_text())
    assert decision["promoted"] and decision["benchmark"] == "fakeclue_test"
