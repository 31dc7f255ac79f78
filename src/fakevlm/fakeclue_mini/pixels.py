"""Steps on pixels that every family and the builder share: the last step of every image, the
grey test, and matching a fake's PNG size to its crop's."""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
from PIL import Image

from fakevlm.formats.fakeclue import PNG_SAVE_ARGS


def match_png_size(
    make: Callable[[float], np.ndarray], reference: np.ndarray, level_range: list[float], steps: int
) -> np.ndarray:
    """`make(level)` at the level (bisected in `level_range`) whose PNG is as large as the reference's.

    Removing detail makes an image compress better; a file-size shortcut would then tell the
    label, so each detail-removing family puts back noise until the size matches.
    """
    target = png_size(reference)
    low, high = level_range
    for _ in range(steps):  # PNG size grows with the noise level
        middle = (low + high) / 2
        low, high = (middle, high) if png_size(make(middle)) < target else (low, middle)
    return make((low + high) / 2).astype(np.float32)


def png_size(pixels: np.ndarray) -> int:
    """Bytes of the pixels as the PNG the writer would store (same settings)."""
    buffer = io.BytesIO()
    Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8)).save(buffer, **PNG_SAVE_ARGS)
    return buffer.tell()


def finish(pixels: np.ndarray, rng: np.random.Generator, read_sigma: float, shot_gain: float) -> Image.Image:
    """The last step of every image, real or fake: sensor-like grain, rounding, an RGB image.

    Signal-dependent Gaussian grain (variance read_sigma^2 + shot_gain * level, a Poisson-Gaussian
    sensor model) gives every image similar noise entropy, so the PNG size cannot tell smooth
    fakes from detailed reals.
    """
    clipped = np.clip(pixels.astype(np.float64), 0.0, 255.0)
    sigma = np.sqrt(read_sigma**2 + shot_gain * clipped)
    noisy = clipped + rng.standard_normal(noise_shape(pixels)) * sigma
    return Image.fromarray(np.clip(np.rint(noisy), 0, 255).astype(np.uint8))  # HxWx3 uint8: RGB


def is_gray(pixels: np.ndarray) -> bool:
    """True when all three channels are equal: grey pictures stay grey under every step."""
    return bool(np.all(pixels[:, :, 0] == pixels[:, :, 1]) and np.all(pixels[:, :, 1] == pixels[:, :, 2]))


def noise_shape(pixels: np.ndarray) -> tuple[int, int, int]:
    """One noise plane for grey pictures (shared by the channels), three for colour ones."""
    return (pixels.shape[0], pixels.shape[1], 1 if is_gray(pixels) else 3)
