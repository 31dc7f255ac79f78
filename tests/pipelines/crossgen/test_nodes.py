"""The cross-generator grid on a tiny set: two families, each trained alone, each tested on both."""

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fakevlm.pipelines.crossgen.nodes import cross_generator_grid, grid_heatmap, only_family

BASELINE = {"model": {"width": 8, "image_size": 32, "image_mean": [0.5] * 3, "image_std": [0.25] * 3},
            "train": {"seed": 0, "max_steps": 40, "batch_size": 16, "learning_rate": 3e-3, "weight_decay": 0.0,
                      "warmup_ratio": 0.05, "logging_steps": 20}}


def image(rng: np.random.Generator, family: str | None) -> Image.Image:
    """Noise; `grid` fakes get a bright 2-pixel grid, `stripes` fakes bright rows: cues a tiny CNN sees."""
    pixels = rng.integers(60, 190, (32, 32, 3), dtype=np.uint8)
    if family == "grid":
        pixels[::2, ::2] = 255
    elif family == "stripes":
        pixels[::4, :] = 255
    return Image.fromarray(pixels)


@pytest.fixture
def manifest(tmp_path) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for split, n in (("train", 24), ("test", 8)):
        for i in range(n):
            family = [None, "grid", None, "stripes"][i % 4]
            path = tmp_path / f"{split}_{i}.png"
            image(rng, family).save(path)
            rows.append({"id": f"{split}_{i}", "image_path": str(path), "split": split, "category": "object",
                         "label": "real" if family is None else "fake", "artifact_family": family,
                         "answer": "This is a real image." if family is None else "This is a fake image."})
    return pd.DataFrame(rows)


def test_only_family_cuts_the_training_split_alone(manifest):
    cut = only_family(manifest, "grid", "train")
    train = cut[cut["split"] == "train"]
    assert set(train["artifact_family"].dropna()) == {"grid"} and (train["label"] == "real").sum() == 12
    assert cut[cut["split"] == "test"].equals(manifest[manifest["split"] == "test"])


def test_grid_trains_on_each_family_alone_and_tests_on_every_one(manifest):
    params = {"model": "baseline", "train_families": ["grid", "stripes"], "test_splits": ["test"]}
    grid, mlflow_metrics = cross_generator_grid(manifest, params, BASELINE, {"train_split": "train"}, {})
    assert grid[["train_family", "test_family"]].values.tolist() == [
        ["grid", "grid"], ["grid", "stripes"], ["stripes", "grid"], ["stripes", "stripes"]]
    assert (grid["n_fake"] == 2).all() and grid["accuracy"].between(0, 1).all()
    scores = grid.set_index(["train_family", "test_family"])["fake_accuracy"]
    # each detector finds the fakes it was trained on
    assert scores["grid", "grid"] == 1.0 and scores["stripes", "stripes"] == 1.0
    assert mlflow_metrics["grid.stripes.accuracy"]["value"] == grid.iloc[1]["accuracy"]
    figure = grid_heatmap(grid)
    assert [axis.get_title() for axis in figure.axes[:2]] == ["fake recall", "AP"]


def test_unknown_model_is_refused(manifest):
    with pytest.raises(ValueError, match="crossgen.model must be baseline or fakevlm"):
        cross_generator_grid(manifest, {"model": "svm", "train_families": ["grid"], "test_splits": ["test"]},
                             BASELINE, {"train_split": "train"}, {})
