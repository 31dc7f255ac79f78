"""Image checks, leakage, the summary and the HTML page, each on tiny images made in tmp_path."""

import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fakevlm import fakeclue_mini
from fakevlm.image_checks import cross_split_pairs, perceptual_hash
from fakevlm.pipelines.validation.nodes import DataValidationError, check_manifest, enforce_gate, summarise
from fakevlm.reports import render_validation_html

from ...conftest import load_params


@pytest.fixture
def params():
    return load_params("validation")


def picture(seed=0, size=(160, 120)) -> Image.Image:
    """A random scene with detail at three scales (up-sampled noise), as a photo has."""
    rng = np.random.default_rng(seed)
    total = np.zeros((size[1], size[0], 3))
    for cells, weight in ((4, 1.0), (12, 0.6), (40, 0.35)):
        coarse = rng.uniform(0, 255, (max(2, cells * size[1] // size[0]), cells, 3)).astype(np.uint8)
        total += weight * np.asarray(Image.fromarray(coarse).resize(size, Image.Resampling.BICUBIC), dtype=float)
    return Image.fromarray(np.clip(total / 1.95, 0, 255).astype(np.uint8))


def row(i, path, image, label="real", split="train", **overrides):
    label_answer = f"This is a {label} image. Plain."
    return {"id": f"img{i}", "image_path": str(path), "label": label, "category": "object", "split": split,
            "width": image.width, "height": image.height, "answer": label_answer, **overrides}


def save(tmp_path, name, image, **save_args):
    path = tmp_path / name
    image.save(path, **save_args)
    return path, image


def manifest_of(rows):
    return pd.DataFrame(rows)


def run_gate(manifest, params):
    report, quarantine = check_manifest(manifest, params)
    return report, quarantine, enforce_gate(manifest, report, summarise(report, quarantine), params)


def test_normalisable_modes_pass_and_are_noted(tmp_path, params):
    base = picture(1, (48, 40))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to stand upright
    palette = picture(4, (48, 40)).convert("P", palette=Image.Palette.ADAPTIVE)
    images = {
        "cmyk.jpg": (picture(2, (48, 40)).convert("CMYK"), {}),
        "palette.png": (palette, {"transparency": 0}),
        "rgba.png": (picture(3, (48, 40)).convert("RGBA"), {}),
        "rotated.jpg": (base, {"exif": exif}),
    }
    rows = []
    for i, (name, (image, args)) in enumerate(images.items()):
        path, _ = save(tmp_path, name, image, **args)
        rows.append(row(i, path, image))
    report, quarantine, validated = run_gate(manifest_of(rows), params)
    assert report["success"] and quarantine.empty and len(validated) == 4
    notes = {note["id"]: (note["mode_normalisation"], note["exif_orientation"]) for note in report["image_notes"]}
    assert notes == {"img0": ("CMYK->RGB", None), "img1": ("P->RGB (alpha dropped)", None),
                     "img2": ("RGBA->RGB (alpha dropped)", None), "img3": (None, 6)}
    assert "CMYK-&gt;RGB" in render_validation_html(report)


def failing(manifest, params, check):
    report, quarantine = check_manifest(manifest, params)
    entry = next(e for e in report["expectations"] if e["check"] == check)
    assert not entry["success"], check
    return report, quarantine


def test_one_pixel_and_sliver_images_fail(tmp_path, params):
    rows = []
    for i, size in enumerate([(1, 1), (4000, 2), (48, 40)]):
        image = picture(i, size)
        rows.append(row(i, save(tmp_path, f"s{i}.png", image)[0], image))
    report, quarantine = failing(manifest_of(rows), params, "aspect_ratio")
    reasons = dict(zip(quarantine["id"], quarantine["reason"]))
    assert set(reasons) == {"img0", "img1"}
    assert "width 1 is outside" in reasons["img0"] and "height 1 is outside" in reasons["img0"]
    assert "image is a sliver: 4000x2" in reasons["img1"]
    assert (quarantine["stage"] == "validation").all()


def test_decompression_bomb_is_reported_not_decoded(tmp_path, params, monkeypatch):
    image = picture(0, (64, 64))
    manifest = manifest_of([row(0, save(tmp_path, "big.png", image)[0], image)])
    # Our own limit, from the parameters.
    _, quarantine = failing(manifest, {**params, "max_pixels": 1000}, "within_pixel_limit")
    assert "decompression-bomb guard): 4096 pixels, more than the limit of 1000" in quarantine.loc[0, "reason"]
    # PIL's own guard (warning between its limit and twice that, error beyond) never crashes the check.
    for limit in (3000, 1000):
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
        _, quarantine = failing(manifest, params, "within_pixel_limit")
        assert "DecompressionBomb" in quarantine.loc[0, "reason"]


def test_identical_image_in_train_and_test_fails_the_gate_naming_both(tmp_path, params):
    image = picture(0, (64, 64))
    rows = [row(0, save(tmp_path, "a.png", image)[0], image, split="train"),
            row(1, save(tmp_path, "b.png", image)[0], image, split="test"),
            row(2, save(tmp_path, "c.png", picture(9, (64, 64)))[0], image, split="test")]
    report, quarantine = check_manifest(manifest_of(rows), params)
    assert quarantine.empty and not report["success"]
    assert report["leakage"]["n_cross_split_pairs"] == 1
    with pytest.raises(DataValidationError, match=r"(?s)'img0' \(train\) ~ 'img1' \(test\), distance 0"):
        enforce_gate(manifest_of(rows), report, summarise(report, quarantine), params)
    # Two test splits may share a picture: neither trains the model.
    rows[0]["split"] = "test_heldout"
    report, quarantine, validated = run_gate(manifest_of(rows), params)
    assert report["leakage"]["n_cross_split_pairs"] == 0 and len(validated) == 3


def reencoded(image: Image.Image) -> Image.Image:
    buffer = io.BytesIO()
    image.resize((image.width * 2, image.height * 2), Image.Resampling.BICUBIC).save(buffer, "JPEG", quality=85)
    return Image.open(buffer)


def test_near_duplicates_are_copies_not_other_crops(params):
    scene = picture(5)
    crop_a, crop_b = scene.crop((0, 0, 96, 96)), scene.crop((24, 12, 120, 108))  # 56% overlap
    hashes = pd.Series([perceptual_hash(image) for image in (crop_a, crop_a, reencoded(crop_a), crop_b)])
    threshold = params["near_duplicate_distance"]

    def pairs(a, b):
        return [(x, y) for x, y, _ in cross_split_pairs(hashes[[a, b]], pd.Series(["train", "test"], index=[a, b]),
                                                         threshold)]

    assert pairs(0, 1) == [(0, 1)]  # identical
    assert pairs(0, 2) == [(0, 2)]  # resized and re-encoded as JPEG
    assert pairs(0, 3) == []  # another crop of the same picture


def test_same_file_with_conflicting_labels_quarantines_both(tmp_path, params):
    image = picture(0, (64, 64))
    path = save(tmp_path, "a.png", image)[0]
    other = picture(7, (64, 64))
    rows = [row(0, path, image, label="real"), row(1, path, image, label="fake"),
            row(2, save(tmp_path, "o.png", other)[0], other)]
    report, quarantine = failing(manifest_of(rows), params, "label_agrees_with_copies")
    reasons = dict(zip(quarantine["id"], quarantine["reason"]))
    assert set(reasons) == {"img0", "img1"}
    assert "labelled differently in ids img1" in reasons["img0"] and "in ids img0" in reasons["img1"]
    summary = summarise(report, quarantine)
    assert summary == {"records_in": 3, "accepted": 1, "quarantined": 2, "by_reason": {"label_agrees_with_copies": 2}}


def test_summary_counts_add_up_and_refuse_a_lost_row(tmp_path, params):
    rows = []
    for i in range(4):
        image = picture(i, (48, 40))
        rows.append(row(i, save(tmp_path, f"{i}.png", image)[0], image))
    rows[1]["split"], rows[2]["category"], rows[3]["image_path"] = "nowhere", "vehicle", str(tmp_path / "gone.png")
    rows[2]["split"] = "nowhere"
    report, quarantine = check_manifest(manifest_of(rows), params)
    summary = summarise(report, quarantine)
    assert summary == {"records_in": 4, "accepted": 1, "quarantined": 3,
                       "by_reason": {"split_in_set": 2, "category_in_set": 1, "file_exists": 1}}
    with pytest.raises(ValueError, match="lost records"):
        summarise(report, quarantine.iloc[1:])


def test_html_names_the_failed_id_and_escapes_text(tmp_path, params):
    image = picture(0, (48, 40))
    rows = [row(0, save(tmp_path, "a.png", image)[0], image, answer="<script>alert('x')</script>")]
    report, _ = check_manifest(manifest_of(rows), params)
    page = render_validation_html(report)
    assert "img0" in page and "answer_verdict_real" in page
    assert "<script>" not in page and "&lt;script&gt;" in page


def test_fakeclue_mini_does_not_leak(params):
    """Different random crops of the same photos in train and test are not near-duplicates."""
    mini = load_params("ingestion")["fakeclue_mini"]
    # Each image has its own random generator, so fewer per category gives a subset of the real set.
    mini["per_category"] = {split: min(int(n), 24) for split, n in mini["per_category"].items()}
    hashes, splits = [], []
    for split, content in fakeclue_mini.build(mini).items():
        for image in content["images"].values():
            hashes.append(perceptual_hash(image))
            splits.append(split)
    pairs = cross_split_pairs(pd.Series(hashes), pd.Series(splits), params["near_duplicate_distance"],
                              params["splits_that_may_share_images"])
    assert pairs == []


def test_report_page_goes_to_the_active_mlflow_run(tmp_path, params, mlflow_store):
    import mlflow

    from fakevlm.pipelines.validation.nodes import report_validation

    image = picture(0, (48, 40))
    rows = [row(0, save(tmp_path, "a.png", image)[0], image, answer="This is a fake image. Wrong.")]
    report, quarantine = check_manifest(manifest_of(rows), params)
    with mlflow.start_run() as run:
        summary, page = report_validation(report, quarantine)
    logged = mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/validation/validation_report.html")
    assert logged == page and "img0" in logged
    assert summary["quarantined"] == 1
