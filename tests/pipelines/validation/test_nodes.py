import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fakevlm.image_checks import image_facts
from fakevlm.pipelines.validation.nodes import DataValidationError, check_manifest, enforce_gate, summarise

from ...conftest import load_params

SIZE = (32, 24)


@pytest.fixture
def params():
    return load_params("validation")


def write_png(path, size=SIZE, mode="RGB", seed=0):
    """Noise from `seed` (so images differ and no two rows are copies), in `mode`."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).convert(mode).save(path)
    return path.as_posix()


def gate(manifest, report, quarantine, params):
    return enforce_gate(manifest, report, summarise(report, quarantine), params)


@pytest.fixture
def manifest(tmp_path) -> pd.DataFrame:
    """Six clean rows, real and fake, each with its own tiny PNG."""
    rows = []
    for i, category in enumerate(["animal", "human", "object", "scene", "satellite", "doc"]):
        label = "fake" if i % 2 else "real"
        rows.append({
            "id": f"img{i}", "image_path": write_png(tmp_path / f"img{i}.png", seed=i), "label": label,
            "category": category, "split": "train" if i < 4 else "test", "source": "synthetic",
            "width": SIZE[0], "height": SIZE[1], "sha256": f"{i:064x}", "artifact_family": None,
            "artifact_region": None, "artifact_strength": None, "reference_answer": None, "original": None,
            "answer": f"This is a {label} image. The texture looks {'generated' if i % 2 else 'natural'}.",
            "annotator": "grounded",
        })
    return pd.DataFrame(rows)


def test_clean_manifest_passes_unchanged(manifest, params):
    report, quarantine = check_manifest(manifest, params)
    assert report["success"] and report["n_rows"] == 6 and report["n_failed_rows"] == 0
    assert report["failed_rows"] == [] and quarantine.empty and "reason" in quarantine.columns
    assert all(entry["success"] and entry["unexpected_count"] == 0 for entry in report["expectations"])
    assert json.loads(json.dumps(report)) == report  # what the JSON dataset saves is what we built
    pd.testing.assert_frame_equal(gate(manifest, report, quarantine, params), manifest)


def test_report_lists_every_check_in_suite_order(manifest, params):
    checks = [entry["check"] for entry in check_manifest(manifest, params)[0]["expectations"]]
    assert checks[:3] == ["id_not_null", "image_path_not_null", "label_not_null"]
    assert checks[8:10] == ["id_unique", "label_in_set"]
    assert {"label_agrees_with_copies", "within_pixel_limit", "aspect_ratio"} <= set(checks)
    assert checks[-2:] == ["answer_verdict_real", "answer_verdict_fake"]


def make_fault(name, df, tmp_path):
    """Break row 2 (or rows 1 and 2 for the duplicate id) the named way; return the check expected to fail."""
    if name == "missing file":
        df.loc[2, "image_path"] = (tmp_path / "nowhere.png").as_posix()
        return "file_exists", "image file not found"
    if name == "corrupt file":
        (tmp_path / "img2.png").write_bytes(b"this is not a PNG")
        return "image_decodes", "image does not decode"
    if name == "wrong label":
        df.loc[2, "label"] = "maybe"
        return "label_in_set", "label 'maybe' is not one of real, fake"
    if name == "unknown category":
        df.loc[2, "category"] = "vehicle"
        return "category_in_set", "category 'vehicle' is not one of"
    if name == "unknown split":
        df.loc[2, "split"] = "holdout"
        return "split_in_set", "split 'holdout' is not one of"
    if name == "duplicate id":
        df.loc[1, "id"] = "img2"
        return "id_unique", "id 'img2' is not unique"
    if name == "answer contradicts label":  # row 2 is real
        df.loc[2, "answer"] = "This is a fake image. The texture looks generated."
        return "answer_verdict_real", "answer does not open with the real verdict"
    if name == "missing answer":
        df.loc[2, "answer"] = None
        return "answer_not_null", "answer is missing"
    if name == "missing width":
        df.loc[2, "width"] = None
        return "width_not_null", "width is missing"
    if name == "missing path":
        df.loc[2, "image_path"] = None
        return "image_path_not_null", "image_path is missing"
    if name == "missing label":
        df.loc[2, "label"] = None
        return "label_not_null", "label is missing"
    if name == "size mismatch":
        df.loc[2, "width"] = 64
        return "width_matches_image", "width 64 differs from the image's 32"
    if name == "too small":
        write_png(tmp_path / "img2.png", size=(8, 24), seed=2)
        df.loc[2, "width"] = 8
        return "width_in_range", "width 8 is outside 16..16384"
    if name == "16-bit image":
        write_png(tmp_path / "img2.png", mode="I;16", seed=2)
        return "image_mode_in_set", "image mode 'I;16' is not one of"
    raise AssertionError(name)


@pytest.mark.parametrize("fault", ["missing file", "corrupt file", "wrong label", "unknown category", "unknown split",
                                   "duplicate id", "answer contradicts label", "missing answer", "missing width",
                                   "missing path", "missing label", "size mismatch",
                                   "too small", "16-bit image"])
def test_each_fault_is_reported_quarantined_and_stops_the_gate(fault, manifest, params, tmp_path):
    check, reason = make_fault(fault, manifest, tmp_path)
    report, quarantine = check_manifest(manifest, params)

    assert not report["success"]
    failed = [entry for entry in report["expectations"] if not entry["success"]]
    assert [entry["check"] for entry in failed] == [check]  # exactly the one rule, no knock-on failures
    assert "img2" in failed[0]["failed_ids"]
    row = next(row for row in report["failed_rows"] if row["row"] == 2)
    path = manifest.loc[2, "image_path"]
    assert row["id"] == "img2" and row["image_path"] == (None if pd.isna(path) else path)
    assert any(reason in r for r in row["reasons"])
    assert reason in quarantine.loc[quarantine["id"] == "img2", "reason"].iloc[0]
    assert report["n_failed_rows"] == len(quarantine) == failed[0]["unexpected_count"]
    assert len(quarantine) + (report["n_rows"] - report["n_failed_rows"]) == len(manifest)
    json.dumps(report)

    with pytest.raises(DataValidationError) as error:
        gate(manifest, report, quarantine, params)
    message = str(error.value)
    assert "img2" in message and check in message and reason in message
    assert params["report_path"] in message and params["quarantine_path"] in message


def test_duplicate_ids_quarantine_both_rows(manifest, params):
    manifest.loc[1, "id"] = "img2"
    report, quarantine = check_manifest(manifest, params)
    assert [row["row"] for row in report["failed_rows"]] == [1, 2]
    assert quarantine["image_path"].tolist() == manifest.loc[[1, 2], "image_path"].tolist()


def test_several_reasons_are_joined(manifest, params):
    manifest.loc[3, ["category", "split"]] = ["vehicle", "holdout"]
    _, quarantine = check_manifest(manifest, params)
    assert quarantine["reason"].tolist() == [
        "category 'vehicle' is not one of animal, human, object, scene, satellite, doc, deepfake; "
        "split 'holdout' is not one of train, val, test, test_heldout, test_heldout_generator, test_wild, loki, ddvqa"
    ]


def test_tolerance_lets_a_small_failure_through_without_the_bad_row(manifest, params, tmp_path):
    manifest.loc[4, "image_path"] = (tmp_path / "gone.png").as_posix()
    report, quarantine = check_manifest(manifest, params)

    with pytest.raises(DataValidationError):
        gate(manifest, report, quarantine, {**params, "max_failed_fraction": 0.1})  # 1/6 > 0.1
    validated = gate(manifest, report, quarantine, {**params, "max_failed_fraction": 0.2})
    assert "img4" not in validated["id"].tolist() and quarantine["id"].tolist() == ["img4"]
    pd.testing.assert_frame_equal(validated, manifest.drop(index=4).reset_index(drop=True))
    assert len(validated) + len(quarantine) == len(manifest)


def test_gate_error_lists_only_the_first_rows(manifest, params):
    manifest["split"] = "holdout"
    report, quarantine = check_manifest(manifest, params)
    message = str(pytest.raises(DataValidationError, gate, manifest, report, quarantine,
                                {**params, "max_rows_in_error": 2}).value)
    assert "6 of 6 rows (100.0%)" in message and "img1" in message and "... and 4 more" in message


def test_report_ids_are_capped(manifest, params):
    manifest["split"] = "holdout"
    report, _ = check_manifest(manifest, {**params, "max_ids_in_report": 3})
    entry = next(entry for entry in report["expectations"] if entry["check"] == "split_in_set")
    assert entry["unexpected_count"] == 6 and entry["failed_ids"] == ["img0", "img1", "img2"]


def test_gate_rejects_a_report_for_another_manifest(manifest, params):
    report, quarantine = check_manifest(manifest, params)
    with pytest.raises(ValueError, match="covers 6 rows"):
        gate(manifest.iloc[:3], report, quarantine, params)


def test_missing_column_is_a_schema_error(manifest, params):
    with pytest.raises(DataValidationError, match="answer"):
        check_manifest(manifest.drop(columns="answer"), params)


def test_image_facts(tmp_path):
    paths = pd.Series([write_png(tmp_path / "ok.png", mode="L"), (tmp_path / "none.png").as_posix(), None])
    facts = image_facts(paths, max_pixels=10_000)
    assert facts.loc[0, ["file_exists", "decodes", "decoded_width", "decoded_height", "image_mode"]].tolist() == [
        True, True, 32, 24, "L"]
    assert facts["file_exists"].tolist() == [True, False, pd.NA]  # no path: unknown, not "missing"
    assert facts["decodes"].isna().tolist() == [False, True, True]  # no file: nothing to decode
