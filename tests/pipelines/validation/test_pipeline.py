import numpy as np
import pandas as pd
import pytest
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner
from kedro_datasets.json import JSONDataset
from kedro_datasets.pandas import ParquetDataset
from kedro_datasets.text import TextDataset
from PIL import Image

from fakevlm.pipelines.validation.nodes import DataValidationError
from fakevlm.pipelines.validation.pipeline import create_pipeline

from ...conftest import load_params


def annotated_manifest(tmp_path, n=4) -> pd.DataFrame:
    rows = []
    for i in range(n):
        path = tmp_path / f"img{i}.png"
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(path)
        label = "fake" if i % 2 else "real"
        rows.append({"id": f"img{i}", "image_path": path.as_posix(), "label": label, "category": "object",
                     "split": "train", "source": "synthetic", "width": 32, "height": 32, "sha256": f"{i:064x}",
                     "artifact_family": None, "artifact_region": None, "artifact_strength": None,
                     "reference_answer": None, "original": None, "answer": f"This is a {label} image. Plain.",
                     "annotator": "grounded"})
    return pd.DataFrame(rows)


def run(manifest, params, tmp_path):
    """Run the pipeline in memory, except that the report and the quarantine are written as the
    project's catalog writes them (which also proves they serialise) and outlive the run."""
    catalog = DataCatalog({
        "annotated_manifest": MemoryDataset(manifest),
        "params:validation": MemoryDataset(params),
        "validation_report": JSONDataset(filepath=str(tmp_path / "validation_report.json")),
        "quarantine": ParquetDataset(filepath=str(tmp_path / "quarantine.parquet")),
        "validation_summary": JSONDataset(filepath=str(tmp_path / "validation_summary.json")),
        "validation_report_html": TextDataset(filepath=str(tmp_path / "validation_report.html")),
        "validated_manifest": MemoryDataset(),
    })
    SequentialRunner().run(create_pipeline(), catalog)
    return catalog


def test_pipeline_passes_a_clean_manifest(tmp_path):
    manifest = annotated_manifest(tmp_path)
    catalog = run(manifest, load_params("validation"), tmp_path)
    assert catalog.load("validation_report")["success"]
    assert catalog.load("quarantine").empty
    assert catalog.load("validation_summary") == {"records_in": 4, "accepted": 4, "quarantined": 0, "by_reason": {}}
    assert "Validation report: passed" in catalog.load("validation_report_html")
    pd.testing.assert_frame_equal(catalog.load("validated_manifest"), manifest)


def test_pipeline_quarantines_within_the_tolerance(tmp_path):
    manifest = annotated_manifest(tmp_path)
    manifest.loc[1, "answer"] = "This is a real image. Plain."  # row 1 is fake
    catalog = run(manifest, {**load_params("validation"), "max_failed_fraction": 0.5}, tmp_path)
    assert catalog.load("validation_report")["n_failed_rows"] == 1
    assert catalog.load("quarantine")[["id", "stage"]].values.tolist() == [["img1", "validation"]]
    assert catalog.load("validation_summary")["by_reason"] == {"answer_verdict_fake": 1}
    assert catalog.load("validated_manifest")["id"].tolist() == ["img0", "img2", "img3"]


def test_pipeline_stops_on_a_failure(tmp_path):
    manifest = annotated_manifest(tmp_path)
    manifest.loc[3, "category"] = "vehicle"
    with pytest.raises(DataValidationError, match="img3"):
        run(manifest, load_params("validation"), tmp_path)
    # the summary and the page are saved before the gate stops the run
    assert '"quarantined": 1' in (tmp_path / "validation_summary.json").read_text()
    assert "img3" in (tmp_path / "validation_report.html").read_text()
