"""How much of the in-the-wild split's label is in the pixels at all, for the features we have offline.

    .venv/bin/python bench/wild_ceiling.py [--folds 5] [--sizes 64 128 224]

Each feature set is read from every in-the-wild image and a logistic regression is trained on the
split itself, cross-validated by group (a generator's outputs, or a photograph's crops, are never on
both sides of a fold), so it learns modern generators from modern generators' own outputs: far more
than FakeClue-mini's training gives the detector. Its ROC-AUC is an upper bound on what a detector
built on those features can reach there (the best over a few regularisation strengths, chosen on
the test folds: optimistic on purpose). Feature sets:

- `imagenet@N`: the ImageNet MobileNetV2 (FakeVLM's and the baseline's starting weights) pooled over
  its last feature map, the image resized to N px (64: the model's input);
- `residual`: the noise residual's radial power spectrum at the native 256 px (image minus its 3 x 3
  median; 32 log bands, its variance and kurtosis): where up-sampling and codec traces live.

Prints ROC-AUC and balanced accuracy per feature set, and the seconds each took (their ratio
against the 64-px one).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from omegaconf import OmegaConf
from PIL import Image
from scipy import ndimage
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score, roc_auc_score
from sklearn.model_selection import GroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from transformers import MobileNetV2Model

from fakevlm import in_the_wild
from fakevlm.model import mobilenet_v2_config, start_mobilenet_v2

IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
STRENGTHS = [0.01, 0.1, 1.0]


@torch.no_grad()
def imagenet_features(images: list[Image.Image], size: int) -> np.ndarray:
    tower = MobileNetV2Model(mobilenet_v2_config(size), add_pooling_layer=False)
    start_mobilenet_v2(tower, "imagenet")
    tower.eval()
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (IMAGENET_MEAN, IMAGENET_STD))
    arrays = [np.asarray(im.convert("RGB").resize((size, size), Image.BICUBIC), np.float32) / 255 for im in images]
    pixels = (torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2) - mean) / std
    return torch.cat([tower(batch).last_hidden_state.mean(dim=(2, 3)) for batch in pixels.split(32)]).numpy()


def residual_spectrum(image: Image.Image, bands: int = 32) -> np.ndarray:
    grey = np.asarray(image.convert("L"), np.float64)
    residual = grey - ndimage.median_filter(grey, 3)
    window = np.outer(np.hanning(grey.shape[0]), np.hanning(grey.shape[1]))
    power = np.abs(np.fft.fftshift(np.fft.fft2(residual * window))) ** 2
    rows, cols = np.indices(power.shape)
    radius = np.hypot(rows - power.shape[0] // 2, cols - power.shape[1] // 2).astype(int)
    half = min(power.shape) // 2
    profile = (np.bincount(radius.ravel(), power.ravel()) / np.bincount(radius.ravel()))[:half]
    log_bands = np.log(profile[: half // bands * bands].reshape(bands, -1).mean(axis=1) + 1e-9)
    centred = residual - residual.mean()
    kurtosis = (centred**4).mean() / residual.var() ** 2
    return np.concatenate([log_bands - log_bands.mean(), [np.log(residual.var()), np.log(kurtosis)]])


def grouped_auc(features: np.ndarray, is_fake: np.ndarray, groups: list[str], folds: int) -> tuple[float, float]:
    """(ROC-AUC, balanced accuracy) of the best regularisation strength, out of fold."""
    best = (0.0, 0.0)
    for strength in STRENGTHS:
        probability = np.zeros(len(is_fake))
        for train, test in GroupKFold(folds).split(features, is_fake, groups):
            probe = make_pipeline(StandardScaler(), LogisticRegression(C=strength, max_iter=5000))
            probability[test] = probe.fit(features[train], is_fake[train]).predict_proba(features[test])[:, 1]
        best = max(best, (roc_auc_score(is_fake, probability), balanced_accuracy_score(is_fake, probability >= 0.5)))
    return best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 224])
    args = parser.parse_args()
    torch.manual_seed(0)
    ingestion = OmegaConf.to_container(OmegaConf.load("conf/base/parameters_ingestion.yml"), resolve=True)["ingestion"]
    split = in_the_wild.build(ingestion["fakeclue_mini"]["wild"], ingestion["fakeclue_mini"]["seed"])
    records = split["records"]
    images = [split["images"][r["image"]] for r in records]
    is_fake = np.array([r["artifact"] is not None for r in records])
    groups = [r["artifact"]["family"] if r["artifact"] else r["origin"]["file"] for r in records]
    print(f"{len(records)} images ({is_fake.sum()} fakes), {len(set(groups))} groups, {args.folds} folds")
    feature_sets = {f"imagenet@{size}": lambda size=size: imagenet_features(images, size) for size in args.sizes}
    feature_sets["residual"] = lambda: np.stack([residual_spectrum(im) for im in images])
    base = None
    for name, compute in feature_sets.items():
        start = time.perf_counter()
        auc, balanced = grouped_auc(compute(), is_fake, groups, args.folds)
        seconds = time.perf_counter() - start
        base = base or seconds
        print(f"{name:13s} ROC-AUC {auc:.3f}  balanced acc. {balanced:.3f}  {seconds:.1f} s ({seconds / base:.1f}x)")


if __name__ == "__main__":
    main()
