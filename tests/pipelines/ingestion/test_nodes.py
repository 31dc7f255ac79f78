"""Ingestion nodes and the FakeClue-mini builder: content, determinism, no file-level shortcut."""

from __future__ import annotations

import io
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import ndimage
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from fakevlm import fakeclue_mini
from fakevlm.datasets import FakeClueDataset
from fakevlm.formats.fakeclue import CATEGORIES, MANIFEST_COLUMNS, PNG_SAVE_ARGS, PROMPT
from fakevlm.pipelines.ingestion.nodes import build_fakeclue_mini, build_manifest

from ...upstream_formats import write_ddvqa, write_ff, write_loki
from .conftest import ingestion_params

# every artifact family the config can draw (FakeClue-mini's own families change with its config)
FAMILIES = {name for weights in ingestion_params()["fakeclue_mini"]["families"].values() for name in weights}


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _saved(tmp_path: Path, params: dict, name: str = "mini") -> dict:
    dataset = FakeClueDataset(path=str(tmp_path / name))
    dataset.save(build_fakeclue_mini(params["fakeclue_mini"]))
    return dataset.load()


def test_build_is_deterministic_to_the_byte(tmp_path, params):
    _saved(tmp_path, params, "a")
    _saved(tmp_path, params, "b")
    first, second = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert first.keys() == second.keys() and len(first) == 7 * (4 + 2) + 2
    assert all(first[name] == second[name] for name in first)


def test_a_different_seed_gives_different_images(params):
    base = fakeclue_mini.build(params["fakeclue_mini"])
    params["fakeclue_mini"]["seed"] += 1
    other = fakeclue_mini.build(params["fakeclue_mini"])
    name = base["train"]["records"][0]["image"]
    assert base["train"]["images"][name].tobytes() != other["train"]["images"][name].tobytes()


def test_every_category_and_split_balanced(params):
    splits = fakeclue_mini.build(params["fakeclue_mini"])
    assert sorted(splits) == ["test", "train"]
    for split, per_category in (("train", 4), ("test", 2)):
        records = splits[split]["records"]
        counts = Counter((r["cate"], r["label"]) for r in records)
        assert counts == {(c, label): per_category // 2 for c in CATEGORIES for label in (0, 1)}
        assert [r["image"] for r in records] == sorted(r["image"] for r in records)
        assert all(r["conversations"] == [{"from": "human", "value": PROMPT}] for r in records)


# test_records_describe_their_artifacts_and_origin: moved to tests/test_fakeclue_mini.py


def test_real_and_fake_files_look_alike(tmp_path, params):
    loaded = _saved(tmp_path, params)
    seen = set()
    for paths in loaded.values():
        for record in json.loads(Path(paths["annotations"]).read_text()):
            with Image.open(Path(paths["images_root"]) / record["image"]) as image:
                seen.add((record["label"], image.format, image.mode, image.size, tuple(sorted(image.info))))
    per_label = {label: {facts[1:] for facts in seen if facts[0] == label} for label in (0, 1)}
    size = params["fakeclue_mini"]["image_size"]
    assert per_label[0] == per_label[1] == {("PNG", "RGB", (size, size), ())}


def test_file_level_features_stay_near_chance(tmp_path, params):
    """PNG size, width, height and mean colour must not tell real from fake (held-out split)."""
    params["fakeclue_mini"]["per_category"] = {"train": 60, "test": 40}
    splits = fakeclue_mini.build(params["fakeclue_mini"])

    def features(split: str) -> tuple[np.ndarray, np.ndarray]:
        rows, labels = [], []
        for record in splits[split]["records"]:
            image = splits[split]["images"][record["image"]]
            buffer = io.BytesIO()
            image.save(buffer, **PNG_SAVE_ARGS)  # what FakeClueDataset writes
            rows.append([buffer.tell(), image.width, image.height, *np.asarray(image).mean(axis=(0, 1))])
            labels.append(record["label"])
        return np.array(rows, dtype=float), np.array(labels)

    x_train, y_train = features("train")
    x_test, y_test = features("test")
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(x_train, y_train)
    assert model.score(x_test, y_test) <= 0.65


def test_checkerboard_leaves_a_period_two_pattern_that_grows_with_strength():
    perturbation = fakeclue_mini.checkerboard_perturbation(4, seed=7, texture=0.5)

    def phase_contrast(image: np.ndarray) -> float:
        gray = image.mean(axis=2)[2:-2, 2:-2]  # borders use edge padding
        return float(np.ptp([gray[a::2, b::2].mean() for a in (0, 1) for b in (0, 1)]))

    flat = np.full((32, 32, 3), 128, dtype=np.float32)
    contrasts = [phase_contrast(fakeclue_mini.checkerboard(flat, s, perturbation, 0.08, 0.5)) for s in (0.0, 0.5, 1.0)]
    assert contrasts[0] < 1e-6  # the bilinear kernel alone up-samples without a pattern
    assert 2.0 < contrasts[1] < contrasts[2] < 40  # 0.08 relative gain on grey 128: a few grey levels
    ramp = np.tile(np.linspace(60, 200, 32, dtype=np.float32), (32, 1))[:, :, None].repeat(3, axis=2)
    assert abs(float(fakeclue_mini.checkerboard(ramp, 1.0, perturbation, 0.08, 0.5).mean() - ramp.mean())) < 1.0


def test_real_crops_have_no_checkerboard_but_checkerboard_fakes_do(params):
    params["fakeclue_mini"]["per_category"] = {"train": 24}
    split = fakeclue_mini.build(params["fakeclue_mini"])["train"]
    perturbation = fakeclue_mini.checkerboard_perturbation(4, seed=7, texture=0.5)
    sums = np.array([[perturbation[a::2, b::2].sum() for b in (0, 1)] for a in (0, 1)])

    def pattern(record: dict) -> float:
        """Correlation of the image's phase means with the simulator's phase gains."""
        gray = np.asarray(split["images"][record["image"]], dtype=float).mean(axis=2)
        phases = np.array([[gray[a::2, b::2].mean() for b in (0, 1)] for a in (0, 1)]) / (gray.mean() + 1.0)
        return float(((phases - phases.mean()) * sums).sum())

    real = [pattern(r) for r in split["records"] if r["artifact"] is None]
    whole = {"family": "checkerboard", "region": "the whole image"}
    board = [pattern(r) for r in split["records"] if r["artifact"] and whole.items() <= r["artifact"].items()]
    # real crops: phase means vary only with content; nearly every checkerboard fake sits above them
    assert len(board) >= 10 and np.mean(np.array(board) > np.percentile(np.abs(real), 95)) >= 0.9


def test_oversmoothing_removes_detail_but_keeps_the_png_size(params):
    rng = np.random.default_rng(0)
    pixels = np.asarray(Image.open(fakeclue_mini.package_data_dir("skimage") / "chelsea.png").convert("RGB")
                        .resize((64, 64), box=(100, 50, 228, 178)), dtype=np.float32)
    config = params["fakeclue_mini"]["oversmoothing"]
    smoothed = fakeclue_mini.oversmoothing(pixels, 1.0, rng, **config)
    detail = pixels - ndimage.gaussian_filter(pixels, (1.6, 1.6, 0))
    left = smoothed - ndimage.gaussian_filter(smoothed, (1.6, 1.6, 0))
    # what remains at high frequency is noise, hardly correlated with the photo's own detail
    assert np.corrcoef(detail.ravel(), left.ravel())[0, 1] < 0.5
    sizes = [fakeclue_mini.png_size(p) for p in (pixels, smoothed)]
    assert abs(sizes[1] / sizes[0] - 1) < 0.1


def test_face_blend_changes_the_face_only():
    rng = np.random.default_rng(3)
    target = np.full((64, 64, 3), 120, dtype=np.float32)
    donor = np.full((64, 64, 3), 180, dtype=np.float32)
    config = {"radius_x": [0.3, 0.3], "radius_y": [0.4, 0.4], "centre_shift": 0.0, "edge_softness": 0.04,
              "colour_shift": 0.12, "donor_blur": 1.0}
    out = fakeclue_mini.face_blend(target, donor, 1.0, rng, **config)
    assert out[32, 32].min() > 170 and np.allclose(out[0, 0], 120) and np.allclose(out[63, 0], 120)
    assert 120 < out[32, 32 - 19].mean() < 180  # the soft boundary sits between the two


def test_manifest_of_fakeclue_mini(tmp_path, params):
    loaded = _saved(tmp_path, params)
    manifest, quarantine, summary = build_manifest(loaded, params)
    assert quarantine.empty and summary["records_in"] == summary["accepted"] == len(manifest)
    assert set(summary["per_source"]) == {"fakeclue_mini_train", "fakeclue_mini_test"}
    explicit, _, _ = build_manifest(loaded, {**params, "sources": [{"name": "fakeclue_mini", "format": "builtin"}]})
    pd.testing.assert_frame_equal(explicit, manifest)  # `builtin` is what an empty list means
    assert tuple(manifest.columns) == MANIFEST_COLUMNS
    assert len(manifest) == 7 * (4 + 2) and manifest["id"].is_unique
    assert set(manifest["source"]) == {"fakeclue_mini_train", "fakeclue_mini_test"}
    assert manifest[["split", "id"]].equals(manifest[["split", "id"]].sort_values(["split", "id"]))
    assert set(manifest["category"]) == set(CATEGORIES)
    assert all(Path(p).is_file() for p in manifest["image_path"])
    fake = manifest[manifest["label"] == "fake"]
    real = manifest[manifest["label"] == "real"]
    assert fake["artifact_family"].isin(FAMILIES).all() and fake["artifact_strength"].between(0, 1).all()
    assert real["artifact_family"].isna().all() and real["artifact_strength"].isna().all()
    assert manifest["reference_answer"].isna().all()
    assert (manifest[["width", "height"]] == params["fakeclue_mini"]["image_size"]).all().all()
    assert manifest["id"].str.startswith("fakeclue_mini_").all()


@pytest.fixture
def other_source(tmp_path) -> dict:
    """A one-image FakeClue split elsewhere, as a configured source."""
    root = tmp_path / "other" / "val"
    (root / "satellite" / "fake").mkdir(parents=True)
    Image.new("RGB", (9, 7), (10, 20, 30)).save(root / "satellite" / "fake" / "1.png")
    annotations = tmp_path / "other" / "data_json" / "val.json"
    annotations.parent.mkdir()
    annotations.write_text(json.dumps([{"image": "satellite/fake/1.png", "label": 0, "cate": "satellite",
                                        "conversations": [{"from": "human", "value": PROMPT},
                                                          {"from": "gpt", "value": "This is a fake image."}]}]))
    return {"name": "other_val", "format": "fakeclue", "images": str(root), "annotations": str(annotations),
            "split": "val"}


def test_configured_sources_replace_fakeclue_mini(tmp_path, params, other_source):
    loaded = _saved(tmp_path, params)
    manifest, _, _ = build_manifest(loaded, {**params, "sources": [other_source]})
    assert manifest["id"].tolist() == ["other_val/val/satellite/fake/1.png"]
    row = manifest.iloc[0]
    assert (row.source, row.split, row.label, row.width, row.height) == ("other_val", "val", "fake", 9, 7)
    assert row.reference_answer == "This is a fake image."


@pytest.mark.parametrize(
    ("change", "message"),
    [({"format": "coco"}, "'other_val'.*unknown format 'coco'"), ({"format": None}, "'other_val'.*unknown format")],
)
def test_unknown_format_names_the_source(params, other_source, change, message):
    with pytest.raises(ValueError, match=message):
        build_manifest({}, {**params, "sources": [{**other_source, **change}]})


def test_sources_need_all_keys_and_unique_names(params, other_source):
    incomplete = {k: v for k, v in other_source.items() if k != "annotations"}
    with pytest.raises(ValueError, match="'other_val'.*missing keys \\['annotations'\\]"):
        build_manifest({}, {**params, "sources": [incomplete]})
    with pytest.raises(ValueError, match="unique.*other_val"):
        build_manifest({}, {**params, "sources": [other_source, other_source]})


def test_unreadable_file_is_quarantined_and_the_run_goes_on(params, other_source):
    Path(other_source["annotations"]).write_bytes('[{"image": "caf\u00e9.png"}]'.encode("latin-1"))
    manifest, quarantine, summary = build_manifest({}, {**params, "sources": [other_source]})
    assert manifest.empty and len(quarantine) == 1 and summary["by_reason"] == {"unreadable_file": 1}
    row = quarantine.iloc[0]
    assert row.record == row.path == other_source["annotations"]
    assert row.reason.startswith(f"unreadable_file: {other_source['annotations']}: invalid JSON: not utf-8 text at byte")


def test_loki_and_ddvqa_with_the_minimal_source_config(tmp_path, params):
    """name, format, split, images and annotations as upstream ships them; the rest comes from conf."""
    loki_json = write_loki(tmp_path / "LOKI")
    test_set = write_ddvqa(tmp_path / "DQ_FF++")
    write_ff(tmp_path / "ff", ["youtube/c23/images/071/0000.png", "youtube/c23/images/071/0001.png",
                               "Deepfakes/c23/images/071_054/0000.png", "NeuralTextures/c23/images/033_097/0000.png",
                               "NeuralTextures/c23/images/033_097/0001.png"])
    sources = [{"name": "loki", "format": "loki", "split": "loki", "images": str(tmp_path / "LOKI"),
                "annotations": str(loki_json)},
               {"name": "ddvqa", "format": "ddvqa", "split": "ddvqa", "images": str(tmp_path / "ff"),
                "annotations": str(test_set)},
               {"name": "split_by_mistake", "format": "ddvqa", "split": "ddvqa", "images": str(tmp_path / "ff"),
                "annotations": str(tmp_path / "DQ_FF++" / "split" / "test.json")}]
    manifest, quarantine, summary = build_manifest({}, {**params, "sources": sources})
    assert manifest.groupby("source")["label"].value_counts().to_dict() == {
        ("ddvqa", "fake"): 3, ("ddvqa", "real"): 2, ("loki", "fake"): 3, ("loki", "real"): 2}
    assert manifest.loc[manifest["source"] == "loki", "image_path"].is_unique
    assert summary["per_source"]["loki"]["by_reason"] == {"label_conflict": 2, "no_category": 1, "unmapped_category": 1}
    assert summary["per_source"]["ddvqa"]["by_reason"] == {"bad_label": 1}
    assert summary["per_source"]["split_by_mistake"]["by_reason"] == {"unreadable_file": 1}
    assert summary["records_in"] == len(manifest) + len(quarantine) == 10 + 4 + 1 + 1


def test_manifest_survives_parquet(tmp_path, params):
    manifest, quarantine, _ = build_manifest(_saved(tmp_path, params), params)
    quarantine.to_parquet(tmp_path / "quarantine.parquet")
    manifest.to_parquet(tmp_path / "manifest.parquet")
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "manifest.parquet"), manifest)
