"""Fixtures of the ingestion tests: the project's own FakeClue-mini config, shrunk."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

PROJECT_ROOT = Path(__file__).resolve().parents[3]


def ingestion_params() -> dict:
    """`ingestion` from conf/base/parameters_ingestion.yml, as Kedro would pass it."""
    path = PROJECT_ROOT / "conf" / "base" / "parameters_ingestion.yml"
    return OmegaConf.to_container(OmegaConf.load(path), resolve=True)["ingestion"]


@pytest.fixture
def params() -> dict:
    """The default ingestion config with tiny counts: 4 train and 2 test images per category, and
    no in-the-wild split (tests/test_shortcut_guards.py covers it)."""
    config = ingestion_params()
    config["fakeclue_mini"]["per_category"] = {"train": 4, "test": 2}
    config["fakeclue_mini"]["wild"] = None
    return config
