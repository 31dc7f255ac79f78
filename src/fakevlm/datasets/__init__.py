"""Kedro datasets for fakevlm's own artifacts."""

from fakevlm.datasets.fakeclue_dataset import FakeClueDataset
from fakevlm.datasets.hf_model_dataset import HFModelDataset

__all__ = ["FakeClueDataset", "HFModelDataset"]
