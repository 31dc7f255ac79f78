"""A teammate gets the exact artifacts: `dvc push` to an S3 remote, `dvc pull` in a clone elsewhere."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import boto3
import pytest

from .conftest import PROJECT_ROOT
from .tiny_project import kedro_run, output_digests, project_environment, tiny_run

pytestmark = pytest.mark.e2e

BUCKET = "fakevlm-dvc"


def run(cwd: Path, *command: str) -> str:
    result = subprocess.run(command, cwd=cwd, env=project_environment(cwd), capture_output=True, text=True,
                            timeout=600, check=False)
    assert result.returncode == 0, f"{' '.join(command)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def dvc(cwd: Path, *args: str) -> str:
    return run(cwd, sys.executable, "-m", "dvc", *args)


def git(cwd: Path, *args: str) -> str:
    return run(cwd, "git", "-c", "user.name=test", "-c", "user.email=test@example.invalid", *args)


def test_push_then_pull_in_another_clone_needs_no_rerun(tmp_path_factory, tmp_path, s3_server):
    # the tiny run's project as a repository of its own: code, config, dvc.yaml and its outputs
    origin = tmp_path / "origin"
    shutil.copytree(tiny_run(tmp_path_factory), origin, ignore=shutil.ignore_patterns("mlflow.db", "mlruns"))
    for name in ("dvc.yaml", ".gitignore", ".dvcignore"):
        shutil.copy(PROJECT_ROOT / name, origin)
    git(origin, "init", "-q")
    dvc(origin, "init", "-q")
    dvc(origin, "config", "core.analytics", "false")
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket=BUCKET)
    # as the README says: the remote in .dvc/config (committed), the credentials in the environment
    dvc(origin, "remote", "add", "-d", "team", f"s3://{BUCKET}/fakevlm")
    dvc(origin, "remote", "modify", "team", "endpointurl", s3_server)
    dvc(origin, "commit", "-f", "-q")   # the run was `kedro run`: DVC records what it wrote
    assert "up to date" in dvc(origin, "status")
    dvc(origin, "push", "-q")
    git(origin, "add", "-A")
    git(origin, "commit", "-q", "-m", "a run")

    teammate = tmp_path / "elsewhere" / "teammate"
    git(tmp_path, "clone", "-q", str(origin), str(teammate))
    assert not (teammate / "data/06_models/fakevlm").exists()
    dvc(teammate, "pull", "-q")

    assert "up to date" in dvc(teammate, "status")
    assert output_digests(teammate) == output_digests(origin)
    assert "Stage 'evaluation' didn't change, skipping" in dvc(teammate, "repro", "evaluation")
    # the pulled artifacts are usable as they are: evaluation runs on them without the stages before it
    (teammate / "data/08_reporting/metrics.json").unlink()
    kedro_run(teammate, "--pipelines", "evaluation")
    assert (teammate / "data/08_reporting/metrics.json").read_bytes() == \
        (origin / "data/08_reporting/metrics.json").read_bytes()
