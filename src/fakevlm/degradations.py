"""The degradations detector benchmarks are judged under (CNNDetection's blur and JPEG, GenImage's
JPEG and resizing): pure, deterministic, one function per kind, each taking its strength.

`CLEAN` is the strength at which a kind leaves the image as it is: where a sweep's plot starts.
"""

from __future__ import annotations

import io

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
