"""The Kedro configuration as `kedro run` and `kedro run --env gpu` see it."""

from kedro.config import OmegaConfigLoader

from fakevlm.settings import CONFIG_LOADER_ARGS

from .conftest import PROJECT_ROOT


def parameters(env):
    loader = OmegaConfigLoader(str(PROJECT_ROOT / "conf"), env=env, **{k: v for k, v in CONFIG_LOADER_ARGS.items() if k != "default_run_env"})
    return loader["parameters"]


def test_gpu_env_overrides_only_what_it_states():
    base, gpu = parameters("local"), parameters("gpu")
    assert gpu["training"]["model"]["pretrained"] == "llava-hf/llava-1.5-7b-hf"
    assert gpu["training"]["stages"]["instruction"]["learning_rate"] == 2e-5
    # soft merge: keys the gpu env doesn't state come from base
    assert gpu["training"]["question"] == base["training"]["question"]
    assert gpu["training"]["stages"]["instruction"]["remove_unused_columns"] is False
    assert gpu["evaluation"]["benchmarks"] == {
        "test": "fakeclue_test", "test_heldout": None, "test_heldout_generator": None, "test_wild": None}
    assert [s["name"] for s in gpu["ingestion"]["sources"]] == ["fakeclue_train", "fakeclue_test"]
    assert base["ingestion"]["sources"] == []
    assert gpu["registry"]["benchmark"] == "fakeclue_test"


def test_every_stage_has_its_parameters_file():
    for stage in ("ingestion", "annotation", "validation", "training", "evaluation", "registry"):
        assert (PROJECT_ROOT / "conf" / "base" / f"parameters_{stage}.yml").is_file()
        assert stage in parameters("local")



def test_team_server_credentials_come_from_conf_local(tmp_path, monkeypatch):
    """kedro-mlflow exports the `server.credentials` key of conf/local/credentials.yml as the
    environment variables MLflow's client sends to the server."""
    import os
    import shutil
    from types import SimpleNamespace

    from kedro_mlflow.config.kedro_mlflow_config import KedroMlflowConfig

    shutil.copytree(PROJECT_ROOT / "conf" / "base", tmp_path / "base")
    (tmp_path / "local").mkdir()
    (tmp_path / "local" / "credentials.yml").write_text(
        "mlflow_credentials:\n  MLFLOW_TRACKING_USERNAME: alice\n  MLFLOW_TRACKING_PASSWORD: secret\n")
    assert "# mlflow_credentials:" in (PROJECT_ROOT / "conf" / "local" / "credentials.yml.example").read_text()
    monkeypatch.setattr(os, "environ", {})   # what the export writes stays in this test
    loader = OmegaConfigLoader(str(tmp_path), env="local", config_patterns={"mlflow": ["mlflow*"]},
                               **{k: v for k, v in CONFIG_LOADER_ARGS.items() if k != "default_run_env"})
    config = KedroMlflowConfig(**loader["mlflow"])
    config._export_credentials(SimpleNamespace(_get_config_credentials=lambda: loader["credentials"]))
    assert os.environ == {"MLFLOW_TRACKING_USERNAME": "alice", "MLFLOW_TRACKING_PASSWORD": "secret"}
