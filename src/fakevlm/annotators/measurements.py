"""Forensic measurements on images, vectorised over a stack of same-sized images.

Each measurement is a number per image (and, where it is located, the 3x3 grid cell where it is
most extreme), so that the grounded annotator only claims what was measured. All functions take
float32 arrays of shape (N, H, W, 3) in 0..255 and are pure.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image
from scipy import ndimage

GRID = 3  # cells per side; the cell names are the annotation parameters' `places`
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def load_stack(images: Sequence[Image.Image]) -> np.ndarray:
    """(N, H, W, 3) float32 from RGB images of one size."""
    return np.stack([np.asarray(image.convert("RGB"), dtype=np.float32) for image in images])


def _cells(values: np.ndarray, reduce) -> np.ndarray:
    """`reduce` of (N, H, W) values over each cell of a GRID x GRID grid -> (N, GRID*GRID)."""
    n, h, w = values.shape
    rows = np.linspace(0, h, GRID + 1).astype(int)
    cols = np.linspace(0, w, GRID + 1).astype(int)
    return np.stack(
        [reduce(values[:, rows[i] : rows[i + 1], cols[j] : cols[j + 1]].reshape(n, -1), axis=1)
         for i in range(GRID) for j in range(GRID)],
        axis=1,
    )


def residual(luma: np.ndarray) -> np.ndarray:
    """The image minus its 3x3 mean: sensor grain and the finest detail, content mostly removed."""
    return luma - ndimage.uniform_filter(luma, size=(1, 3, 3), mode="reflect")


def spectral_peak(res: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The strongest isolated peak of the residual's spectrum over the median of its ring, and its
    period in pixels. Up-sampling layers repeat a pattern every 2-8 pixels: a sharp peak there."""
    n, h, w = res.shape
    magnitude = np.abs(np.fft.fft2(res - res.mean(axis=(1, 2), keepdims=True)))
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.fftfreq(w)[None, :]
    radius = np.hypot(fy, fx)
    high = radius >= 0.2  # periods of 5 pixels and shorter on either axis
    rings = np.minimum((radius * 20).astype(int), 14)
    ring_median = np.zeros_like(magnitude)
    for ring in np.unique(rings[high]):
        mask = rings == ring
        ring_median[:, mask] = np.median(magnitude[:, mask], axis=1, keepdims=True)
    ratio = np.where(high, magnitude / np.maximum(ring_median, 1e-6), 0.0).reshape(n, -1)
    best = ratio.argmax(axis=1)
    period = 1.0 / np.maximum(np.broadcast_to(radius, (h, w)).reshape(-1)[best], 1e-6)
    return ratio.max(axis=1), np.round(period, 1)


def high_frequency_share(luma: np.ndarray) -> np.ndarray:
    """Energy of the finest band (periods under 3 px) over that of the band below it: a photograph
    keeps fine detail and grain, over-smoothing and generators' spectral fall-off lose it."""
    magnitude = np.abs(np.fft.fft2(luma - luma.mean(axis=(1, 2), keepdims=True))) ** 2
    h, w = luma.shape[1:]
    radius = np.hypot(np.fft.fftfreq(h)[:, None], np.fft.fftfreq(w)[None, :])
    fine = magnitude[:, radius >= 0.33].sum(axis=1)
    middle = magnitude[:, (radius >= 0.1) & (radius < 0.33)].sum(axis=1)
    return fine / np.maximum(middle, 1e-6)


def grain(res: np.ndarray) -> np.ndarray:
    """The grain (median absolute residual) of each grid cell, (N, GRID*GRID)."""
    return _cells(np.abs(res), np.median) + 1e-3


def noise_inconsistency(spread: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """log2 of the grain of the most deviant cell over the median cell, absolute; that cell; and
    whether it is smoother (-1) or noisier (+1). Spliced or blended regions carry another
    camera's grain, or none."""
    log_ratio = np.log2(spread / np.median(spread, axis=1, keepdims=True))
    cell = np.abs(log_ratio).argmax(axis=1)
    chosen = log_ratio[np.arange(len(cell)), cell]
    return np.abs(chosen), cell, np.sign(chosen).astype(int)


def blockiness(luma: np.ndarray, block: int) -> tuple[np.ndarray, np.ndarray]:
    """Per image, the largest (over cells) ratio of the luminance steps across `block`-pixel
    boundaries to the steps inside blocks, and that cell: a JPEG grid shows above 1."""
    step = np.abs(np.diff(luma, axis=2))  # (N, H, W-1): step between column x and x+1
    on_grid = np.zeros(step.shape[2], dtype=bool)
    on_grid[block - 1 :: block] = True
    boundary = np.where(on_grid[None, None, :], step, np.nan)
    inside = np.where(~on_grid[None, None, :], step, np.nan)
    ratio = (_cells(boundary, np.nanmean) + 0.5) / (_cells(inside, np.nanmean) + 0.5)
    cell = ratio.argmax(axis=1)
    return ratio[np.arange(len(cell)), cell], cell


def colour_shift(stack: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The cell whose mean colour (opponent axes, luminance removed) lies farthest from the image's
    median cell, in grey levels; that cell; and its hue direction (0 red, 1 green, 2 blue: the
    channel most above the rest). Pasted or blended regions keep their source's white balance."""
    chroma = stack - stack.mean(axis=3, keepdims=True)
    means = np.stack([_cells(chroma[..., c], np.mean) for c in range(3)], axis=2)  # (N, cells, 3)
    offset = means - np.median(means, axis=1, keepdims=True)
    distance = np.linalg.norm(offset, axis=2)
    cell = distance.argmax(axis=1)
    rows = np.arange(len(cell))
    shift = distance[rows, cell]
    # a grey image has no white balance to judge: NaN makes no claim either way
    grey = np.abs(chroma).max(axis=(1, 2, 3)) < 0.5
    return np.where(grey, np.nan, shift), cell, offset[rows, cell].argmax(axis=1)


def measure(stack: np.ndarray, block: int) -> dict[str, np.ndarray]:
    """Every measurement of a stack, by name (one value per image)."""
    luma = stack @ _LUMA
    res = residual(luma)
    peak, period = spectral_peak(res)
    spread = grain(res)
    noise, noise_cell, noise_sign = noise_inconsistency(spread)
    blocks, block_cell = blockiness(luma, block)
    colour, colour_cell, hue = colour_shift(stack)
    return {
        "spectral": peak, "spectral_period": period,
        "detail": high_frequency_share(luma),
        "detail_cell_low": spread.argmin(axis=1), "detail_cell_high": spread.argmax(axis=1),
        "noise": noise, "noise_cell": noise_cell, "noise_sign": noise_sign,
        "blockiness": blocks, "block_cell": block_cell,
        "colour": colour, "colour_cell": colour_cell, "colour_hue": hue,
    }  # fmt: skip
