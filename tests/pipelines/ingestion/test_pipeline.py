"""The ingestion pipeline, run by Kedro's SequentialRunner over an in-test catalog."""

from __future__ import annotations

import json
from pathlib import Path

from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from fakevlm.datasets import FakeClueDataset
from fakevlm.formats.fakeclue import MANIFEST_COLUMNS
from fakevlm.pipelines.ingestion import create_pipeline


def test_pipeline_wiring():
    pipeline = create_pipeline()
    assert pipeline.inputs() == {"params:ingestion.fakeclue_mini", "params:ingestion"}
    assert pipeline.outputs() == {"manifest", "ingestion_quarantine", "ingestion_summary"}
    assert {node.name for node in pipeline.nodes} == {"build_fakeclue_mini", "build_manifest"}


def test_pipeline_writes_fakeclue_mini_and_returns_the_manifest(tmp_path, params):
    mini_path = tmp_path / "data" / "01_raw" / "fakeclue_mini"
    catalog = DataCatalog(
        {
            "params:ingestion": MemoryDataset(params),
            "params:ingestion.fakeclue_mini": MemoryDataset(params["fakeclue_mini"]),
            "fakeclue_mini": FakeClueDataset(path=str(mini_path)),
            "manifest": MemoryDataset(),
            "ingestion_quarantine": MemoryDataset(),
            "ingestion_summary": MemoryDataset(),
        }
    )
    SequentialRunner().run(create_pipeline(), catalog)

    manifest = catalog["manifest"].load()
    assert tuple(manifest.columns) == MANIFEST_COLUMNS
    assert len(manifest) == 7 * (4 + 2)
    assert catalog["ingestion_quarantine"].load().empty
    assert catalog["ingestion_summary"].load()["accepted"] == len(manifest)
    assert manifest.groupby("split")["label"].value_counts().to_dict() == {
        ("test", "fake"): 7, ("test", "real"): 7, ("train", "fake"): 14, ("train", "real"): 14,
    }
    # FakeClue's layout on disk, and the manifest points into it
    for split, count in (("train", 28), ("test", 14)):
        records = json.loads((mini_path / "data_json" / f"{split}.json").read_text())
        assert len(records) == count
        assert all((mini_path / split / r["image"]).is_file() for r in records)
    assert all(Path(p).is_relative_to(mini_path) for p in manifest["image_path"])
