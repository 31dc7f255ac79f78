"""The cross-generator grid (GenImage's train-on-one, test-on-all table; CNNDetection's ProGAN-only
protocol): for each training family, a detector trained on the real images of the training split
and that family's fakes alone, then scored on every family's fakes against the test splits' real
images. The stages' own nodes train and score: `train_baseline` or `train_fakevlm`, then
evaluation's `predict` and `per_generator`."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from fakevlm.metrics import flatten_metrics
from fakevlm.pipelines.evaluation.nodes import baseline_verdicts, per_generator, predict
from fakevlm.pipelines.training.nodes import train_baseline, train_fakevlm

log = logging.getLogger(__name__)
GRID_COLUMNS = ["train_family", "test_family", "n_fake", "accuracy", "fake_accuracy", "real_accuracy",
                "average_precision", "roc_auc"]


def only_family(manifest: pd.DataFrame, family: str, train_split: str) -> pd.DataFrame:
    """The manifest with the training split cut to its real images and the fakes of `family`."""
    train = manifest["split"] == train_split
    keep = ~train | (manifest["label"] == "real") | (manifest["artifact_family"] == family)
    return manifest[keep]


def _test_rows(manifest: pd.DataFrame, splits: list[str]) -> pd.DataFrame:
    return manifest[manifest["split"].isin(splits)]


def _baseline_predictions(model, rows: pd.DataFrame) -> pd.DataFrame:
    predicted, probabilities = baseline_verdicts(model, rows)
    return pd.DataFrame({"label": rows["label"].to_numpy(), "artifact_family": rows["artifact_family"].to_numpy(),
                         "predicted_label": predicted, "fake_probability": probabilities})


def _fakevlm_predictions(model, rows: pd.DataFrame, evaluation: dict[str, Any], question: str) -> pd.DataFrame:
    # one benchmark of every test split; the verdict is read from the answer's first tokens
    scoring = {**evaluation, "benchmarks": {"crossgen": "crossgen"}, "max_new_tokens": evaluation["verdict_max_new_tokens"]}
    return predict(model, rows.assign(split="crossgen"), scoring, question)


def cross_generator_grid(
    validated_manifest: pd.DataFrame, params: dict[str, Any], baseline: dict[str, Any], training: dict[str, Any],
    evaluation: dict[str, Any],
) -> tuple[pd.DataFrame, dict[str, dict[str, float]]]:
    """The grid, one row per (training family, test family), and its MLflow metrics
    (`crossgen.<train>.<test>.accuracy`, ...)."""
    rows = _test_rows(validated_manifest, params["test_splits"])
    grid = []
    for family in params["train_families"]:
        manifest = only_family(validated_manifest, family, training["train_split"])
        log.info("crossgen: training the %s on the real images and the %s fakes", params["model"], family)
        if params["model"] == "baseline":
            model = train_baseline(manifest, baseline, training["train_split"])[0]
            predictions = _baseline_predictions(model, rows)
        elif params["model"] == "fakevlm":
            model = train_fakevlm(manifest, training)[0]
            predictions = _fakevlm_predictions(model, rows, evaluation, training["question"])
        else:
            raise ValueError(f"crossgen.model must be baseline or fakevlm; got {params['model']!r}")
        for test_family, scores in per_generator(predictions).items():
            grid.append({"train_family": family, "test_family": test_family, **scores})
    table = pd.DataFrame(grid)[GRID_COLUMNS]
    nested = {train: {test: part.iloc[0][GRID_COLUMNS[2:]].to_dict() for test, part in by_test.groupby("test_family")}
              for train, by_test in table.groupby("train_family")}
    return table, {k: {"value": v, "step": 0} for k, v in flatten_metrics(nested).items()}


def grid_heatmap(grid: pd.DataFrame):
    """Fake recall and AP of each (training family, test family), as two heat maps (accuracy, in
    grid.csv, is mostly the split's real images, the same in every column)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(14, 6))
    for axis, (metric, title) in zip(axes, (("fake_accuracy", "fake recall"), ("average_precision", "AP"))):
        table = grid.pivot(index="train_family", columns="test_family", values=metric)
        image = axis.imshow(table.to_numpy(dtype=float), vmin=0, vmax=1, cmap="viridis")
        axis.set_xticks(np.arange(len(table.columns)), table.columns, rotation=60, ha="right")
        axis.set_yticks(np.arange(len(table.index)), table.index)
        for (i, j), value in np.ndenumerate(table.to_numpy(dtype=float)):
            axis.text(j, i, f"{value:.2f}", ha="center", va="center", color="w" if value < 0.6 else "k", fontsize=7)
        axis.set(xlabel="tested on", ylabel="trained on", title=title)
        figure.colorbar(image, ax=axis, fraction=0.046)
    figure.tight_layout()
    return figure
