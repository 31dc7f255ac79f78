"""The degradations detector benchmarks are judged under (CNNDetection's blur and JPEG, GenImage's
JPEG and resizing): pure, deterministic, one function per kind, each taking its strength.

`CLEAN` is the strength at which a kind leaves the image as it is: where a sweep's plot starts.
`augment` is CNNDetection's training-time augmentation made of the same blur and JPEG.
"""

from __future__ import annotations

import io

from collections.abc import Mapping, Sequence
from typing import Any

from PIL import Image, ImageFilter


def jpeg(image: Image.Image, quality: float) -> Image.Image:
    """A JPEG round trip at `quality` (1-100)."""
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=int(quality))
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return decoded.convert("RGB")


def rescale(image: Image.Image, factor: float) -> Image.Image:
    """Down-scaled by `factor` (bicubic) and back to the original size: the detail a resize loses."""
    small = (max(1, round(image.width * factor)), max(1, round(image.height * factor)))
    return image.convert("RGB").resize(small, Image.Resampling.BICUBIC).resize(image.size, Image.Resampling.BICUBIC)


def blur(image: Image.Image, sigma: float) -> Image.Image:
    """A Gaussian blur of standard deviation `sigma` pixels (PIL's radius is the sigma)."""
    return image.convert("RGB").filter(ImageFilter.GaussianBlur(radius=sigma))


DEGRADATIONS = {"jpeg": jpeg, "rescale": rescale, "blur": blur}
CLEAN = {"jpeg": 100, "rescale": 1.0, "blur": 0.0}


def degrade(image: Image.Image, kind: str, strength: float) -> Image.Image:
    if kind not in DEGRADATIONS:
        raise ValueError(f"unknown degradation {kind!r}; known: {', '.join(sorted(DEGRADATIONS))}")
    return DEGRADATIONS[kind](image, strength)


def augment(image: Image.Image, params: Mapping[str, Any], draws: Sequence[float]) -> Image.Image:
    """CNNDetection's training augmentation (Wang et al., 2020): with probability `blur.p` a blur of
    sigma uniform in `blur.sigma`, then with probability `jpeg.p` a JPEG round trip of quality
    uniform in `jpeg.quality`. `draws`: four uniform numbers in [0, 1), the caller's randomness."""
    (low, high), (worst, best) = params["blur"]["sigma"], params["jpeg"]["quality"]
    if draws[0] < params["blur"]["p"]:
        image = blur(image, low + draws[1] * (high - low))
    if draws[2] < params["jpeg"]["p"]:
        image = jpeg(image, round(worst + draws[3] * (best - worst)))
    return image.convert("RGB")
