"""`make gpu-smoke`: conf/gpu's path (LLaVA-1.5 layout, 336 px, torchrun, ZeRO-2, gradient
checkpointing, loader workers) end to end on this CPU, on a copy of the project."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import mlflow.artifacts
import pytest
import requests
import yaml
from mlflow import MlflowClient
from transformers import AutoModelForImageTextToText, LlavaForConditionalGeneration

from fakevlm.model_card import CARD_METRICS, front_matter
from fakevlm.smoke import kedro_params
from fakevlm.training import free_port

from .conftest import fakevlm_serve
from .tiny_project import copy_project, failure_excerpt, kedro_run, project_environment

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    project = copy_project(tmp_path_factory.mktemp("gpu_smoke"), {})
    result = subprocess.run([sys.executable, "-m", "fakevlm.smoke"], cwd=project, env=project_environment(project),
                            capture_output=True, text=True, timeout=1200, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, failure_excerpt(output)
    return project, output


def registered_files(project: Path, version: str, folder: Path) -> Path:
    """The registered model version's files (MLmodel, artifacts/<model folder>/...), downloaded."""
    store = f"sqlite:///{project / 'mlflow.db'}"
    uri = MlflowClient(tracking_uri=store, registry_uri=store).get_model_version_download_uri("fakevlm", version)
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(folder), tracking_uri=store))


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


def test_registered_model_carries_a_model_card_with_the_run_s_figures(smoke, tmp_path):
    project, _ = smoke
    metrics = json.loads((project / "data/08_reporting/metrics.json").read_text())
    (card,) = registered_files(project, "1", tmp_path).glob("artifacts/*/README.md")
    assert card.read_text() == (project / "data/08_reporting/model_card.md").read_text()
    metadata = front_matter(card.read_text())
    assert metadata["base_model"] == "data/06_models/llava-1.5-small" and metadata["license"] == "llama2"
    (result,) = metadata["model-index"][0]["results"]
    figures = {m["name"]: m["value"] for m in result["metrics"]}
    scores = metrics[result["dataset"]["name"]]
    expected = {name: round(scores[key], 4) for key, (_, name) in CARD_METRICS.items() if not math.isnan(scores[key])}
    assert figures == expected and len(figures) >= 3


def test_fakevlm_s_checkpoint_format_is_detected_served_evaluated_and_registered(smoke, tmp_path):
    """FakeVLM's released weights are a llava-hf folder; the LLaVA-1.5-shaped one stands in."""
    project, _ = smoke
    overrides = yaml.safe_load((project / "conf/smoke/gpu_smoke.yml").read_text())["overrides"]
    checkpoint = "data/06_models/llava-1.5-small"
    image = project / "data/01_raw/FakeClue/test/animal/real/0000.png"
    detect = subprocess.run([str(Path(sys.executable).parent / "fakevlm"), "detect", "--model", checkpoint, str(image),
                             "--json"], cwd=project, env=project_environment(project), capture_output=True, text=True,
                            timeout=300, check=False)
    assert detect.returncode == 0, detect.stderr[-3000:]
    result = json.loads(detect.stdout.splitlines()[-1])
    assert result["path"] == str(image) and {"verdict", "fake_probability", "explanation"} <= set(result)

    with fakevlm_serve(project / checkpoint, free_port(), tmp_path / "serve.log", "--api-key", "smoke") as url:
        response = requests.post(f"{url}/detect", files={"file": (image.name, image.read_bytes(), "image/png")},
                                 headers={"Authorization": "Bearer smoke"}, timeout=120)
    assert response.status_code == 200 and "explanation" in response.json()

    # training would save over the checkpoint under evaluation: refused before any node runs
    refused = kedro_run(project, "--env", "gpu", "--params", f"evaluation.model={checkpoint}", expect_success=False)
    assert "run only the later stages" in refused.stdout + refused.stderr
    kedro_run(project, "--env", "gpu", "--pipelines", "evaluation,registry",
              "--params", kedro_params({**overrides, "evaluation.model": checkpoint}))
    metrics = json.loads((project / "data/08_reporting/metrics.json").read_text())["fakeclue_test"]
    assert {"accuracy", "verdict_token_accuracy"} <= set(metrics)  # parsed text, and as FakeVLM's paper
    decision = json.loads((project / "data/08_reporting/registry_decision.json").read_text())
    assert decision["version"] == "2"
    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    assert str(client.get_model_version_by_alias("fakevlm", "challenger").version) == "2"
    registered = registered_files(project, "2", tmp_path).glob("artifacts/*/model.safetensors")
    assert [p.read_bytes() for p in registered] == [(project / checkpoint / "model.safetensors").read_bytes()]
