"""Helpers (no tests): tiny manifests of images written to tmp_path and the annotation config."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from .conftest import checker_image, load_params

CATEGORIES = ("animal", "human", "object", "scene", "satellite", "doc", "deepfake")


def annotation_params(tmp_path: Path, **overrides) -> dict:
    params = load_params("annotation")
    params["cache_dir"] = str(tmp_path / "cache")
    params.update(overrides)
    return params


def tiny_manifest(folder: Path, n: int = 14, size: int = 32, seed: int = 0) -> pd.DataFrame:
    """`n` images, alternately real (noise) and fake (noise with a 2-pixel grid, recorded as a
    checkerboard over the whole image), cycling through the seven categories."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        fake = i % 2 == 1
        path = folder / f"img{i:03d}.png"
        checker_image(rng, fake, size).save(path)
        rows.append({
            "id": f"img{i:03d}", "image_path": str(path), "label": "fake" if fake else "real",
            "category": CATEGORIES[i % len(CATEGORIES)], "split": "train", "source": "tiny",
            "width": size, "height": size, "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "artifact_family": "checkerboard" if fake else None,
            "artifact_region": "the whole image" if fake else None,
            "artifact_strength": 0.9 if fake else np.nan, "reference_answer": None,
        })  # fmt: skip
    return pd.DataFrame(rows)


def prompts() -> dict:
    return load_params("annotation_prompts")


def grey_image(size: int = 32) -> Image.Image:
    return Image.fromarray(np.full((size, size, 3), 128, dtype=np.uint8))
