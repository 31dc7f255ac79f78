"""Network fake families: how a real generative network (fakevlm.networks) turns a real crop into
a fake, and the step that keeps its colour mode and file size from telling the label."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from fakevlm import networks
from fakevlm.fakeclue_mini.pixels import is_gray, match_png_size, noise_shape


def super_resolution(pixels: np.ndarray, rng: np.random.Generator, network: networks.NcnnUpscaler) -> np.ndarray:
    """The crop down-scaled by the network's factor, then up-scaled by the network: what a GAN
    super-resolver (Real-ESRGAN) invents in place of the detail the small copy lost."""
    size_y, size_x = pixels.shape[:2]
    small = networks.resize(pixels, (size_x // network.scale, size_y // network.scale))
    return network(small)[:size_y, :size_x]


def translation(pixels: np.ndarray, rng: np.random.Generator, network: networks.CycleGan) -> np.ndarray:
    """The crop through an image-to-image GAN, each channel's mean and spread set back to the crop's.

    The translator's trace is its texture (transposed-convolution up-sampling, instance-norm
    tones); its colour cast (sepia, for vintagify) would let a detector read the colour instead.
    """
    out = network(pixels).astype(np.float64)
    source = pixels.astype(np.float64)
    spread = out.std(axis=(0, 1)) + 1e-6
    matched = (out - out.mean(axis=(0, 1))) / spread * source.std(axis=(0, 1)) + source.mean(axis=(0, 1))
    return matched.astype(np.float32)


def sample(pixels: np.ndarray, rng: np.random.Generator, network: networks.Dcgan) -> np.ndarray:
    """A new image from a random latent (the crop is not used), resized to the crop's size only when
    that differs from the network's native one."""
    out = network(rng)
    size_y, size_x = pixels.shape[:2]
    return out if out.shape[:2] == (size_y, size_x) else networks.resize(out, (size_x, size_y))


def like_the_crop(
    made: np.ndarray, crop: np.ndarray, rng: np.random.Generator, noise_range: list[float], search_steps: int
) -> np.ndarray:
    """A network's output given the crop's colour mode and at least its PNG size.

    A grey crop's fake is grey (the networks tint grey input slightly, and a grey image keeps one
    noise plane in `finish`, so a tint would tell the label). A GAN's output is smoother than the
    photograph it stands beside and compresses better; Gaussian grain at the level (searched in
    `noise_range`) that brings its PNG up to the crop's size keeps file size from telling the
    label, as the simulated families' noise floors do. An output already as large gets (almost) none.
    """
    out = made.astype(np.float64)
    if is_gray(crop):
        out = out.mean(axis=2, keepdims=True).repeat(3, axis=2)
    grain = rng.standard_normal(noise_shape(crop))
    return match_png_size(lambda level: out + level * grain, crop, noise_range, search_steps)


# how a network family makes its fake: (real crop, rng, loaded network) -> pixels of the same size
NETWORK_MAKERS: dict[str, Callable[[np.ndarray, np.random.Generator, Any], np.ndarray]] = {
    "super_resolution": super_resolution,
    "translation": translation,
    "sample": sample,
}
