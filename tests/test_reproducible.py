"""The same inputs give byte-identical artifacts in any folder: what `dvc status` relies on."""

from __future__ import annotations

import pytest

from .tiny_project import TINY, copy_project, dvc_outputs, kedro_run, output_digests, tiny_run, tiny_run_digests

pytestmark = pytest.mark.e2e


def test_a_clone_at_another_path_writes_identical_artifacts(tmp_path_factory, tmp_path):
    first, expected = tiny_run(tmp_path_factory), tiny_run_digests(tmp_path_factory)
    second = copy_project(tmp_path / "somewhere" / "else", TINY)
    kedro_run(second)

    assert {"data/06_models/fakevlm", "data/02_intermediate/manifest.parquet"} <= set(dvc_outputs())
    made = output_digests(second)
    assert sorted(made) == sorted(expected)
    differing = sorted(name for name in made if made[name] != expected[name])
    assert differing == [], f"differ between the two clones: {differing}"
    # nothing in an artifact names the folder it was made in (the trained weights included)
    for project in (first, second):
        holding_path = [name for name in made if str(project).encode() in (project / name).read_bytes()]
        assert holding_path == [], f"hold the clone's path {project}"
