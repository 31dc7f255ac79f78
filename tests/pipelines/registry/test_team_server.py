"""The registry against a team's MLflow (the `team_server` fixture): runs, registry and users in
PostgreSQL, artifacts in S3 behind the server's proxy, basic authentication; races and outages."""

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import boto3
import mlflow
import psycopg2
import pytest
from mlflow import MlflowClient
from mlflow.store.artifact.http_artifact_repo import HttpArtifactRepository

from fakevlm import registry
from fakevlm.console import main
from fakevlm.registry import RegistryError

from ...conftest import (QUESTION, S3_CREDENTIALS, TEAM, make_labelled_images, save_tiny_model,
                         small_training_params)
from .test_nodes import aliases, metrics_with, registrar


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """One tiny model for the module's tests; each registers it under a name of its own."""
    folder = tmp_path_factory.mktemp("tiny")
    return save_tiny_model(folder / "model", small_training_params(folder), make_labelled_images())


def versions(client, name):
    return sorted(str(v.version) for v in client.search_model_versions(f"name='{name}'"))


def lock_held(client, name):
    return bool(client.search_registered_models(f"name='{name}{registry.LOCK_SUFFIX}'"))


def test_pipeline_registry_and_detect_through_a_team_server(tiny_model, team_server, labelled_images,
                                                             tmp_path, monkeypatch, capsys):
    register = registrar(tiny_model, labelled_images, tmp_path)
    client = MlflowClient()
    assert register(metrics_with(0.8))["promoted"]
    assert register(metrics_with(0.9))["promoted"]
    assert aliases(client) == {"champion": "2", "challenger": "2", "previous": "1"}

    # a version carries what decides; every metric stays on its run
    version = client.get_model_version("fakevlm", "2")
    assert sorted(version.tags) == ["benchmark", "evaluation_data_hash", "gate", "metric.accuracy", "metric.css",
                                    "metric.ece", "metric.f1", "metric.n", "metric.rouge_l"]
    assert version.tags["gate"] == "promoted: beats champion v1 on accuracy within every guard"
    assert version.tags["metric.accuracy"] == "0.9" and version.tags["benchmark"] == "fakeclue_mini_test"
    assert client.get_run(version.run_id).data.metrics["evaluation.fakeclue_mini_test.per_category.doc.accuracy"] == 0.5

    # PostgreSQL holds the registry, the S3 bucket the model's files
    with psycopg2.connect(f"{team_server.database}/mlflow") as db, db.cursor() as cursor:
        cursor.execute("SELECT version, run_id FROM model_versions WHERE name = 'fakevlm' ORDER BY version")
        assert cursor.fetchall() == [(1, client.get_model_version("fakevlm", "1").run_id), (2, version.run_id)]
    s3 = boto3.client("s3", endpoint_url=team_server.s3_url, aws_access_key_id=S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
                      aws_secret_access_key=S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"])
    keys = [o["Key"] for o in s3.get_paginator("list_objects_v2").paginate(Bucket=team_server.bucket).search("Contents")]
    for number in ("1", "2"):
        logged_model = client.get_model_version("fakevlm", number).source.removeprefix("models:/")   # m-<id>
        stored = [k for k in keys if f"/models/{logged_model}/artifacts/" in k]
        assert any(k.endswith("/MLmodel") for k in stored) and any(k.endswith("/model.safetensors") for k in stored), keys

    # `fakevlm detect` loads models:/fakevlm@champion through the server
    image = tmp_path / "mine.png"
    labelled_images[1][1].save(image)
    assert main(["detect", str(image), "--json"]) == 0
    result = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert result["explanation"] == register.model.generate([labelled_images[1][1]], QUESTION,
                                                            register.model.max_new_tokens)[0]

    # a reader may not move the champion
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "viewer")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", TEAM["viewer"])
    with pytest.raises(SystemExit):
        main(["registry", "rollback"])
    assert "this user may not change the model" in capsys.readouterr().err
    assert aliases(client)["champion"] == "2" and not lock_held(client, "fakevlm")

    # a wrong password is an error that says so, for the pipeline and for `fakevlm detect`
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "pipeline")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "not-the-password")
    with pytest.raises(RegistryError, match="the server refused the credentials .*MLFLOW_TRACKING_PASSWORD"):
        register(metrics_with(0.95))
    with pytest.raises(SystemExit):
        main(["detect", str(image)])
    assert f"MLflow at {team_server.url}: the server refused the credentials" in capsys.readouterr().err


def test_two_registry_stages_at_once_leave_the_better_one_champion(tiny_model, team_server, labelled_images,
                                                                    tmp_path, monkeypatch):
    worse, better = (registrar(tiny_model, labelled_images, tmp_path, "fakevlm-race") for _ in range(2))
    real_lock = registry.promotion_lock
    both_logged = threading.Barrier(2, timeout=600)

    def lock_together(*args):
        both_logged.wait()   # both runs reach the promotion at the same moment, their models logged
        return real_lock(*args)

    monkeypatch.setattr(registry, "promotion_lock", lock_together)
    with ThreadPoolExecutor(2) as pool:
        decisions = list(pool.map(lambda job: job[0](job[1]), [(worse, metrics_with(0.7)), (better, metrics_with(0.9))]))

    # one decided against the champion the other had just made: they took turns
    assert sorted(d["reason"] == "no champion yet" for d in decisions) == [False, True]
    final = aliases(MlflowClient(), "fakevlm-race")
    assert final["champion"] == decisions[1]["version"]
    assert decisions[0]["version"] in (final["challenger"], final.get("previous"))


def test_tracking_server_unreachable_mid_run_leaves_nothing_half_registered(tiny_model, team_server,
                                                                            labelled_images, tmp_path, monkeypatch):
    name = "fakevlm-outage"
    register = registrar(tiny_model, labelled_images, tmp_path, name)
    client = MlflowClient()
    assert register(metrics_with(0.8))["promoted"]

    # the server goes away once the new model's files are stored, as its promotion starts
    real_lock = registry.promotion_lock

    def outage_then_lock(*args):
        team_server.tracking.down()
        return real_lock(*args)

    monkeypatch.setattr(registry, "promotion_lock", outage_then_lock)
    with pytest.raises(RegistryError, match=f"the server is unreachable while registering and promoting model '{name}'"):
        register(metrics_with(0.9))
    team_server.tracking.up()
    assert versions(client, name) == ["1"] and aliases(client, name) == {"champion": "1", "challenger": "1"}
    assert not lock_held(client, name)

    # it goes away between creating the version and moving the aliases
    monkeypatch.setattr(registry, "promotion_lock", real_lock)
    real_alias = MlflowClient.set_registered_model_alias

    def outage_then_alias(self, *args):
        team_server.tracking.down()
        return real_alias(self, *args)

    monkeypatch.setattr(MlflowClient, "set_registered_model_alias", outage_then_alias)
    with pytest.raises(RegistryError) as failure:
        register(metrics_with(0.9))
    monkeypatch.setattr(MlflowClient, "set_registered_model_alias", real_alias)
    team_server.tracking.up()
    assert f"model '{name}' v2 is registered with its artifacts and tags, but @champion was not moved" in str(failure.value)
    assert f"`fakevlm registry unlock --name {name}` releases it" in str(failure.value)
    assert versions(client, name) == ["1", "2"] and aliases(client, name) == {"champion": "1", "challenger": "1"}
    assert client.get_model_version(name, "2").tags["gate"].startswith("promoted: beats champion v1")
    mlflow.pyfunc.load_model(f"models:/{name}/2")   # whole: its files are there
    assert lock_held(client, name)   # its holder could not release it
    assert main(["registry", "unlock", "--name", name]) == 0 and not lock_held(client, name)
    assert main(["registry", "promote", "2", "--name", name]) == 0
    assert aliases(client, name) == {"champion": "2", "challenger": "1", "previous": "1"}


def test_s3_down_while_the_model_is_logged_registers_nothing(tiny_model, team_server, labelled_images,
                                                             tmp_path, monkeypatch):
    name = "fakevlm-s3"
    register = registrar(tiny_model, labelled_images, tmp_path, name)
    real_upload = HttpArtifactRepository.log_artifact
    uploaded = []

    def upload_until_s3_fails(self, local_file, artifact_path=None):
        if uploaded:
            team_server.s3.down()   # after the model's first file
        uploaded.append(local_file)
        return real_upload(self, local_file, artifact_path)

    monkeypatch.setattr(HttpArtifactRepository, "log_artifact", upload_until_s3_fails)
    with pytest.raises(RegistryError, match="while storing the model's artifacts; nothing was registered"):
        register(metrics_with(0.9))
    team_server.s3.up()
    client = MlflowClient()
    assert len(uploaded) == 2 and versions(client, name) == [] and not lock_held(client, name)
