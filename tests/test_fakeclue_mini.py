"""FakeClue-mini: artifact families, the held-out split, optional Debian pictures, no shortcut."""

from __future__ import annotations

import io
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from fakevlm import fakeclue_mini
from fakevlm.formats.fakeclue import CATEGORIES, PNG_SAVE_ARGS

from .conftest import PROJECT_ROOT, load_params

FAMILIES = set(fakeclue_mini.SIMULATORS)
NETWORK_FAMILIES = {"realesrgan_x4plus", "realesr_animevideov3_x4", "waifu2x_photo_x2", "cyclegan_vintage", "dcgan_face"}
SIZE = 64


@pytest.fixture
def mini() -> dict:
    """`ingestion.fakeclue_mini` as Kedro passes it, with tiny counts."""
    params = load_params("ingestion")["fakeclue_mini"]
    params["per_category"] = {"train": 4, "test": 2, "test_heldout": 2, "test_heldout_generator": 2}
    params["wild"] = None  # tests/test_shortcut_guards.py covers it
    return params


def _crop(name: str, box: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """A 64 px float crop of a scikit-image picture (a stand-in for a real FakeClue-mini crop)."""
    with Image.open(fakeclue_mini.package_data_dir("skimage") / name) as image:
        picture = image.convert("RGB")
    return np.asarray(picture.resize((SIZE, SIZE), Image.Resampling.LANCZOS, box=box), dtype=np.float32)


def _document() -> np.ndarray:
    """A rendered page at the data set's size, as the doc category makes it."""
    spec = load_params("ingestion")["fakeclue_mini"]["documents"]
    page = fakeclue_mini.render_document(np.random.default_rng(5), spec)
    return np.asarray(page.resize((SIZE, SIZE), Image.Resampling.LANCZOS), dtype=np.float32)


# --------------------------------------------------------------------------------------------
# Simple measurements, one per kind of trace
# --------------------------------------------------------------------------------------------


def band_energy(pixels: np.ndarray, low: float, high: float) -> float:
    """Spectral energy of the grey image in a ring of radial frequency [low, high) cycles/px."""
    grey = pixels.astype(np.float64).mean(axis=2)
    power = np.abs(np.fft.rfft2(grey - grey.mean())) ** 2
    radius = fakeclue_mini.radial_frequency(*grey.shape)
    return float(power[(radius >= low) & (radius < high)].sum())


def nyquist_peaks(pixels: np.ndarray) -> float:
    """Energy at the period-2 bins (the checkerboard's peaks) relative to the mean energy."""
    grey = pixels.astype(np.float64).mean(axis=2)
    power = np.abs(np.fft.fft2(grey - grey.mean())) ** 2
    half_y, half_x = grey.shape[0] // 2, grey.shape[1] // 2
    return float((power[half_y, 0] + power[0, half_x] + power[half_y, half_x]) / power.mean())


def box_seam(pixels: np.ndarray, box: tuple[int, int, int, int]) -> float:
    """Step across a box's vertical edges relative to the step one pixel further inside."""
    top, left, height, width = box
    grey = pixels.astype(np.float64)
    rows = slice(top, top + height)
    across = [np.abs(grey[rows, c] - grey[rows, c - 1]).mean() for c in (left, left + width) if 0 < c < grey.shape[1]]
    inside = [np.abs(grey[rows, c + 1] - grey[rows, c]).mean() for c in (left + 1, left + width - 3)]
    return float(np.mean(across) / max(np.mean(inside), 1e-6))


def slot_seam(pixels: np.ndarray, box: tuple[int, int, int, int], cell: int) -> float:
    """Horizontal step at glyph-slot borders relative to the step inside slots."""
    top, left, height, width = box
    line = pixels[top : top + height, left : left + width].astype(np.float64)
    steps = np.abs(np.diff(line, axis=1)).mean(axis=(0, 2))
    at_border = np.zeros(steps.size, dtype=bool)
    at_border[cell - 1 :: cell] = True  # diff index i compares columns i and i+1
    return float(steps[at_border].mean() / max(steps[~at_border].mean(), 1e-6))


def periodicity(pixels: np.ndarray, lags: range) -> float:
    """Largest correlation between the image and itself shifted right or down by a lag."""
    grey = pixels.astype(np.float64).mean(axis=2)
    best = -1.0
    for lag in lags:
        for a, b in ((grey[:, :-lag], grey[:, lag:]), (grey[:-lag], grey[lag:])):
            best = max(best, float(np.corrcoef(a.ravel(), b.ravel())[0, 1]))
    return best


# --------------------------------------------------------------------------------------------
# Each family changes the image and leaves a measurable trace
# --------------------------------------------------------------------------------------------


def test_checkerboard_adds_periodic_spectral_peaks():
    crop = _crop("chelsea.png")
    perturbation = fakeclue_mini.checkerboard_perturbation(4, seed=7, texture=0.5)
    faked = fakeclue_mini.checkerboard(crop, 1.0, perturbation, 0.08, 0.5)
    assert not np.allclose(faked, crop)
    assert nyquist_peaks(faked) > 5 * nyquist_peaks(crop)


def test_oversmoothing_removes_mid_frequencies_but_keeps_png_size(mini):
    crop = _crop("chelsea.png")
    faked = fakeclue_mini.oversmoothing(crop, 1.0, np.random.default_rng(0), **mini["oversmoothing"])
    detail = crop - ndimage.gaussian_filter(crop, (1.6, 1.6, 0))
    left = faked - ndimage.gaussian_filter(faked, (1.6, 1.6, 0))
    assert np.corrcoef(detail.ravel(), left.ravel())[0, 1] < 0.5  # the photo's own detail is gone
    assert abs(fakeclue_mini.png_size(faked) / fakeclue_mini.png_size(crop) - 1) < 0.1


@pytest.mark.parametrize("strength", [0.5, 1.0])
def test_spectral_falloff_attenuates_high_frequencies_and_adds_a_floor(mini, strength):
    crop = _crop("chelsea.png")
    faked = fakeclue_mini.spectral_falloff(crop, strength, np.random.default_rng(1), **mini["spectral_falloff"])
    ratio = band_energy(faked, 0.3, 0.4) / band_energy(faked, 0.02, 0.15)
    real_ratio = band_energy(crop, 0.3, 0.4) / band_energy(crop, 0.02, 0.15)
    assert ratio < real_ratio / 3  # the fall-off: energy past the cut-off is missing
    # the floor near Nyquist: past the dip the spectrum rises again, which a photograph's never does
    bump, real_bump = (band_energy(x, 0.45, 0.72) / band_energy(x, 0.3, 0.4) for x in (faked, crop))
    assert bump > 3 * real_bump
    assert abs(fakeclue_mini.png_size(faked) / fakeclue_mini.png_size(crop) - 1) < 0.1


def test_splice_leaves_a_seam_and_changes_only_its_box(mini):
    crop, donor = _crop("chelsea.png"), _crop("coffee.png")
    box = (16, 20, 28, 24)
    config = {k: v for k, v in mini["splice"].items() if k != "size"}
    faked = fakeclue_mini.splice(crop, donor, box, 1.0, np.random.default_rng(2), **config)
    outside = np.ones((SIZE, SIZE), dtype=bool)
    outside[box[0] - 3 : box[0] + box[2] + 3, box[1] - 3 : box[1] + box[3] + 3] = False
    assert np.allclose(faked[outside], crop[outside], atol=0.5)
    assert box_seam(faked, box) > 1.5 * box_seam(crop, box)
    assert fakeclue_mini.place_words(box, (SIZE, SIZE)) == "the centre"


def test_glyph_garble_breaks_letters_at_slot_borders(mini):
    page = _document()
    config = {k: v for k, v in mini["glyph_garble"].items() if k not in ("band_height", "band_width")}
    box = fakeclue_mini.inkiest_band(page, mini["glyph_garble"]["band_height"], [0.8, 0.8], np.random.default_rng(0))
    faked = fakeclue_mini.glyph_garble(page, box, 1.0, np.random.default_rng(3), **config)
    assert not np.allclose(faked, page)
    assert slot_seam(faked, box, config["cell"]) > 1.15 * slot_seam(page, box, config["cell"])
    top, left, height, width = box
    rest = np.ones(page.shape[:2], dtype=bool)
    rest[top : top + height, left : left + width] = False
    assert np.array_equal(faked[rest], page[rest])
    assert fakeclue_mini.is_gray(faked)  # a grey page stays grey


def test_tile_repeat_makes_the_ground_periodic(mini):
    crop = _crop("grass.png")
    box = (0, 0, SIZE, SIZE)
    faked = fakeclue_mini.tile_repeat(crop, box, 1.0, np.random.default_rng(4), [0.25, 0.25], 0.08)
    lags = range(8, 33)
    assert periodicity(faked, lags) > 0.8 > periodicity(crop, lags) + 0.2


def test_face_blend_changes_the_face_only(mini):
    target, donor = _crop("astronaut.png", (156, 51, 286, 181)), _crop("coffee.png")
    faked = fakeclue_mini.face_blend(target, donor, 1.0, np.random.default_rng(5), **mini["face_blend"])
    assert np.abs(faked[32, 32] - target[32, 32]).max() > 1 and np.allclose(faked[0, 0], target[0, 0], atol=0.5)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_simulator_changes_the_image_and_names_a_region(mini, family):
    category = {"glyph_garble": "doc", "tile_repeat": "satellite", "face_blend": "deepfake"}.get(family, "object")
    photos = fakeclue_mini.load_photos(mini["photos"])
    perturbation = fakeclue_mini.checkerboard_perturbation(4, 7, 0.5)
    scene = fakeclue_mini.Scene(mini, photos, category, perturbation)
    rng = np.random.default_rng(11)
    crop = _document() if family == "glyph_garble" else scene.donor(rng)
    faked, region = fakeclue_mini.SIMULATORS[family](crop, 0.75, rng, scene)
    assert faked.shape == crop.shape and np.abs(faked - crop).max() > 2
    assert isinstance(region, str) and region.startswith(("the ", "a "))


# --------------------------------------------------------------------------------------------
# Families in the built set: shares, the held-out split, wording
# --------------------------------------------------------------------------------------------


def test_records_describe_their_artifacts_and_origin(mini):
    mini["per_category"] = {"train": 24}
    records = fakeclue_mini.build(mini)["train"]["records"]
    low, high = mini["strength"]
    for record in records:
        origin = record["origin"]
        assert set(origin) == {"package", "file", "licence", "crop"} and len(origin["crop"]) == 3 and origin["licence"]
        if record["label"] == 1:
            assert record["artifact"] is None and "/real/" in record["image"]
            continue
        artifact = record["artifact"]
        if artifact["family"] in NETWORK_FAMILIES:  # a network's whole output, made by a named generator
            assert artifact["strength"] == 1.0 and artifact["region"] == "the whole image"
            assert artifact["generator"] == mini["networks"][artifact["family"]]["generator"]
        else:
            assert artifact["family"] in FAMILIES and low <= artifact["strength"] <= high and artifact["region"]
            assert "generator" not in artifact
        if artifact["family"] in ("face_blend", "dcgan_face"):
            assert record["cate"] == "deepfake"
        if artifact["family"] == "face_blend":
            assert artifact["region"] == "the face"
    def shares(category: str) -> Counter:
        return Counter(r["artifact"]["family"] for r in records if r["artifact"] and r["cate"] == category)

    # exact shares
    assert shares("object") == {"checkerboard": 3, "cyclegan_vintage": 3, "oversmoothing": 2, "realesrgan_x4plus": 2,
                                "splice": 2}
    assert shares("doc")["glyph_garble"] == 5 and shares("satellite")["tile_repeat"] == 3
    assert shares("deepfake")["face_blend"] == 3 and shares("deepfake")["dcgan_face"] == 4
    assert {"glyph_garble", "tile_repeat", "face_blend"}.isdisjoint(shares("object") | shares("animal"))


@pytest.mark.parametrize("split", ["test_heldout", "test_heldout_generator"])
def test_heldout_families_only_in_their_own_split(mini, split):
    """The held-out simulated family and the two held-out real networks: each only in its own split,
    the networks in equal shares."""
    mini["per_category"] = {"train": 24, "test": 8, "test_heldout": 8, "test_heldout_generator": 8}
    splits = fakeclue_mini.build(mini)
    assert mini["heldout"] == {"test_heldout": "spectral_falloff",
                               "test_heldout_generator": ["realesr_animevideov3_x4", "waifu2x_photo_x2"]}
    heldout = fakeclue_mini.heldout_families(mini)[split]
    for other in sorted(set(splits) - {split}):
        assert set(heldout).isdisjoint(r["artifact"]["family"] for r in splits[other]["records"] if r["artifact"]), other
    records = splits[split]["records"]
    assert Counter(r["label"] for r in records) == {0: 28, 1: 28}  # half real, half fake
    fakes = Counter(r["artifact"]["family"] for r in records if r["artifact"])
    assert fakes == {family: 28 // len(heldout) for family in heldout}
    assert {r["cate"] for r in records} == set(CATEGORIES)


def test_without_a_heldout_family_every_family_trains(mini):
    mini["heldout"] = {}
    mini["per_category"] = {"train": 16}
    records = fakeclue_mini.build(mini)["train"]["records"]
    trained = {r["artifact"]["family"] for r in records if r["artifact"]}
    assert {"spectral_falloff", "waifu2x_photo_x2", "realesr_animevideov3_x4"} <= trained


def test_unknown_family_is_refused(mini):
    mini["families"]["default"] = {"checkerboard": 1, "sparkles": 1}
    with pytest.raises(ValueError, match="sparkles"):
        fakeclue_mini.build(mini)


def test_every_family_has_its_own_wording():
    """The annotation stage states each family, simulated or network, in its own words (conf, not code)."""
    templates = load_params("annotation")["families"]
    mini = load_params("ingestion")["fakeclue_mini"]
    configured = {name for weights in mini["families"].values() for name in weights}
    assert configured == FAMILIES | NETWORK_FAMILIES == fakeclue_mini.known_families(mini)
    sentences = {}
    for family in sorted(configured):
        assert family in templates, f"no wording for {family}"
        sentences[family] = templates[family].format(region="a patch in the centre", Region="A patch in the centre",
                                                     strength="clear")
        assert "{" not in sentences[family]
    assert len(set(sentences.values())) == len(configured)  # no two families share a sentence


# --------------------------------------------------------------------------------------------
# No shortcut, determinism, optional Debian pictures
# --------------------------------------------------------------------------------------------


def _file_features(split: dict) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """PNG bytes, width, height and mean colour per image, with labels and families."""
    rows, labels, families = [], [], []
    for record in split["records"]:
        image = split["images"][record["image"]]
        buffer = io.BytesIO()
        image.save(buffer, **PNG_SAVE_ARGS)  # what FakeClueDataset writes
        rows.append([buffer.tell(), image.width, image.height, *np.asarray(image).mean(axis=(0, 1))])
        labels.append(record["label"])
        families.append(record["artifact"]["family"] if record["artifact"] else "real")
    return np.array(rows, dtype=float), np.array(labels), families


def test_file_level_features_stay_near_chance_for_every_family(mini):
    """A trivial classifier on file-level features stays near chance, on test and the held-out splits."""
    mini["per_category"] = {"train": 96, "test": 48, "test_heldout": 32, "test_heldout_generator": 32}
    splits = fakeclue_mini.build(mini)
    x_train, y_train, _ = _file_features(splits["train"])
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(x_train, y_train)
    for split in ("test", "test_heldout", "test_heldout_generator"):
        x_test, y_test, _ = _file_features(splits[split])
        assert model.score(x_test, y_test) <= 0.65, split
    # per family: its fakes' PNG sizes sit among the real images' of the same categories
    per_split = [_file_features(content) for content in splits.values()]  # image paths repeat per split
    x_all = np.concatenate([x for x, _, _ in per_split])
    families = [family for _, _, names in per_split for family in names]
    categories = [r["cate"] for content in splits.values() for r in content["records"]]
    drawn = set(families) - {"real"}
    assert drawn == FAMILIES | NETWORK_FAMILIES
    for family in sorted(drawn):
        cats = {c for c, f in zip(categories, families) if f == family}
        fake = np.array([x[0] for x, f in zip(x_all, families) if f == family])
        real = np.array([x[0] for x, f, c in zip(x_all, families, categories) if f == "real" and c in cats])
        assert abs(np.median(fake) / np.median(real) - 1) < 0.1, family


def test_build_is_deterministic_to_the_byte_whatever_the_number_of_processes(mini):
    def png_bytes(splits: dict) -> dict[tuple[str, str], bytes]:
        out = {}
        for split, content in splits.items():
            for name, image in content["images"].items():
                buffer = io.BytesIO()
                image.save(buffer, **PNG_SAVE_ARGS)
                out[(split, name)] = buffer.getvalue()
        return out

    assert mini["workers"] > 1
    first, second = fakeclue_mini.build(mini), fakeclue_mini.build({**mini, "workers": 1})
    assert sorted(first) == ["test", "test_heldout", "test_heldout_generator", "train"]
    assert png_bytes(first) == png_bytes(second)
    assert [s["records"] for s in first.values()] == [s["records"] for s in second.values()]


# A fresh interpreter: torch's OpenMP pool runs, then the build starts its workers
AFTER_TORCH = """
import torch
from omegaconf import OmegaConf
from fakevlm import fakeclue_mini
torch.set_num_threads(2)
x = torch.randn(512, 512)
for _ in range(20):
    x = (x @ x).tanh()
params = OmegaConf.to_container(OmegaConf.load("conf/base/parameters_ingestion.yml"), resolve=True)
mini = {**params["ingestion"]["fakeclue_mini"], "wild": None, "workers": 2,
        "per_category": {"train": 4, "test": 2, "test_heldout": 2, "test_heldout_generator": 2}}
print(sum(len(split["records"]) for split in fakeclue_mini.build(mini).values()))
"""


def test_workers_started_after_torch_has_run_finish():
    """Forked workers of a process whose OpenMP pool had run (torch, ncnn) hung in their first
    parallel region: the whole test suite stopped here. The build's workers are spawned."""
    result = subprocess.run([sys.executable, "-c", AFTER_TORCH], cwd=PROJECT_ROOT, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == [str(7 * (4 + 2 + 2 + 2))]  # 7 categories


def _stamps(root: Path) -> Path:
    """A small fake Tux Paint stamps folder: RGBA photo cut-outs in animal and object folders."""
    rng = np.random.default_rng(0)
    for index, folder in enumerate(["animals/mammals", "animals/birds", "food", "vehicles"] * 2):
        (root / folder).mkdir(parents=True, exist_ok=True)
        rgba = rng.integers(0, 256, size=(48, 40, 4), dtype=np.uint8)
        rgba[:, :, 3] = 255
        rgba[:4, :, 3] = 0  # transparent border: flattened onto white
        Image.fromarray(rgba, "RGBA").save(root / folder / f"stamp{index}.png")
    (root / "animals" / "readme.txt").write_text("not a picture")
    return root


def test_debian_stamps_join_the_pool_when_present(mini, tmp_path):
    mini["debian_roots"] = {"tuxpaint-stamps-default": str(_stamps(tmp_path / "stamps"))}
    mini["per_category"] = {"train": 24}
    photos = fakeclue_mini.load_photos(mini["photos"], mini["debian_roots"])
    assert len(photos["tuxpaint_animals"].files) == 4 and len(photos["tuxpaint_objects"].files) == 4
    assert "blue_marble" not in photos  # xplanet-images: not installed, left out
    records = fakeclue_mini.build(mini)["train"]["records"]
    used = [r["origin"] for r in records if r["origin"]["package"] == "tuxpaint-stamps-default"]
    assert used and all(not Path(o["file"]).is_absolute() and o["file"].endswith(".png") for o in used)
    assert {r["cate"] for r in records if r["origin"]["package"] == "tuxpaint-stamps-default"} <= {"animal", "object"}


def test_without_debian_pictures_the_set_is_as_if_they_were_never_configured(mini, tmp_path):
    absent = str(tmp_path / "absent")
    mini["debian_roots"] = {"tuxpaint-stamps-default": absent, "xplanet-images": absent}
    with_optional = fakeclue_mini.build(mini)
    for name in ("tuxpaint_animals", "tuxpaint_objects", "blue_marble"):
        del mini["photos"][name]
        for names in mini["categories"].values():
            if name in names:
                names.remove(name)
    without = fakeclue_mini.build(mini)
    for split in with_optional:
        assert with_optional[split]["records"] == without[split]["records"]
        assert all(
            with_optional[split]["images"][k].tobytes() == without[split]["images"][k].tobytes()
            for k in with_optional[split]["images"]
        )


def test_a_required_picture_that_is_missing_is_an_error(mini, tmp_path):
    mini["photos"]["blue_marble"]["optional"] = False
    mini["debian_roots"] = {"xplanet-images": str(tmp_path)}
    with pytest.raises(FileNotFoundError):
        fakeclue_mini.build(mini)
