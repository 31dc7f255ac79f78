"""The whole default pipeline as containers of the project's image, run by Kubeflow Pipelines' local
DockerRunner from the spec `fakevlm deploy kfp` generates: a container per stage, one data volume,
one MLflow run on a tracking server on 127.0.0.1.

Needs a Docker daemon (pipelines/dockerd.sh starts one) and the image (`make image`; rebuilt here
only when its inputs changed).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from fakevlm import deploy
from fakevlm.pipeline_registry import STAGES

from .conftest import PROJECT_ROOT
from .tiny_project import TINY, copy_project, dvc_outputs

pytestmark = pytest.mark.e2e
IMAGE = "fakevlm:latest"   # conf/base/parameters_deploy.yml's image, which the generated spec names


@pytest.fixture(scope="module")
def docker_image():
    """The image, built or found up to date by `make image`'s script, with a daemon answering."""
    pipelines = PROJECT_ROOT / "pipelines"
    started = subprocess.run([pipelines / "dockerd.sh", "start"], capture_output=True, text=True, check=True).stdout
    host = dict(line.split("=", 1) for line in started.split())
    previous = os.environ.get("DOCKER_HOST")
    if host["DOCKER_HOST"]:
        os.environ["DOCKER_HOST"] = host["DOCKER_HOST"]
    try:
        subprocess.run([pipelines / "build_image.sh"], check=True, timeout=1800,
                       env={**os.environ, "IMAGE": IMAGE, "PYTHON": sys.executable})
        yield IMAGE
    finally:
        if host.get("STARTED"):
            subprocess.run([pipelines / "dockerd.sh", "stop"], check=True)
        if previous is None:
            os.environ.pop("DOCKER_HOST", None)
        else:
            os.environ["DOCKER_HOST"] = previous


# KFP's local runner, in a process of its own: it swaps the root logger's handlers and `print`, which
# must not reach pytest's captured streams; its log is kept for the failure message.
RUN_SPEC_LOCALLY = """
import sys
import docker
from kfp import components, local

spec, data, conf, outputs, tracking_uri = sys.argv[1:]
local.init(runner=local.DockerRunner(
    network_mode="host",   # the MLflow server listens on the host's 127.0.0.1
    mounts=[docker.types.Mount("/app/data", data, type="bind"),
            docker.types.Mount("/app/conf/local", conf, type="bind", read_only=True)],
), pipeline_root=outputs)
components.load_component_from_file(spec)(mlflow_tracking_uri=tracking_uri, data_pvc="unused-here")
"""


def test_default_pipeline_as_containers_of_the_generated_kfp_spec(docker_image, mlflow_server, tmp_path, capsys):
    # the tiny settings reach the containers as their conf/local, the data as one volume
    project = copy_project(tmp_path / "project", TINY)
    spec = tmp_path / "pipeline.yaml"
    spec.write_text(deploy.kfp_yaml(project, "local"))
    data, outputs = project / "data", tmp_path / "kfp"
    outputs.mkdir()
    for folder in [outputs, data, *data.iterdir()]:
        folder.chmod(0o777)   # written by the image's user

    start = time.monotonic()
    log_path = tmp_path / "kfp-local.log"
    with log_path.open("w") as log:
        local_run = subprocess.run([sys.executable, "-c", RUN_SPEC_LOCALLY, str(spec), str(data),
                              str(project / "conf" / "local"), str(outputs), mlflow_server],
                             stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, timeout=1800)
    assert local_run.returncode == 0, f"KFP's local run failed (exit {local_run.returncode}):\n{log_path.read_text()[-6000:]}"
    with capsys.disabled():
        print(f"\nthe default pipeline as {len(STAGES) + 1} containers: {time.monotonic() - start:.0f} s")

    for output in dvc_outputs():
        assert (project / output).exists(), f"{output}: not written by the stages' containers"
    metrics = json.loads((data / "08_reporting/metrics.json").read_text())["fakeclue_mini_test"]
    assert metrics["n"] == 7 * 2

    client = MlflowClient(tracking_uri=mlflow_server)
    experiment = client.get_experiment_by_name("fakevlm")
    runs = client.search_runs([experiment.experiment_id])
    champion = client.get_model_version_by_alias("fakevlm", "champion")
    seen = [(r.info.run_name, r.info.status) for r in runs]
    assert [r.info.run_id for r in runs] == [champion.run_id], f"the workflow's one MLflow run expected, got {seen}"
    run = runs[0]
    assert run.info.run_name == deploy.RUN_NAME and run.info.status == "FINISHED"
    assert run.data.tags["fakevlm.workflow"] == "true"
    assert run.data.params["training.stages.instruction.max_steps"] == "2"   # the containers' conf/local
    assert "ingestion.fakeclue_mini.per_category.train" in run.data.params
    assert "evaluation.fakeclue_mini_test.accuracy" in run.data.metrics
    assert "training.instruction.loss" in run.data.metrics
    logged = [a.path for a in client.list_artifacts(run.info.run_id, "deepspeed/instruction")]
    assert logged == ["deepspeed/instruction/zero2.json"]   # through the server's artifact proxy
