"""Simulated artifact families: one small pure function per trace the literature finds in generated
images, and the simulator calls that give each its parameters, donor pictures and region words."""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage

from fakevlm.fakeclue_mini.pixels import is_gray, match_png_size, noise_shape
from fakevlm.fakeclue_mini.sources import Photo, draw_crop

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


@dataclass(frozen=True)
class Scene:
    """What a simulator may need beyond the pixels: the config, other pictures, the category."""

    params: Mapping[str, Any]
    photos: Mapping[str, Photo]
    category: str
    perturbation: np.ndarray

    def donor(self, rng: np.random.Generator) -> np.ndarray:
        """Another crop of the same category (a second photograph to paste from)."""
        return draw_crop(self.params, self.photos, self.category, rng)[0]


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
    unit = rng.uniform(-1.0, 1.0, size=noise_shape(image)) * math.sqrt(3.0)
    return match_png_size(
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
    floor = spectral_filter(rng.standard_normal(noise_shape(image)), in_band)
    floor /= max(float(floor.std()), 1e-12)
    return match_png_size(lambda level: attenuated + level * floor, pixels, noise_range, search_steps)


def radial_frequency(size_y: int, size_x: int) -> np.ndarray:
    """Distance of each 2-D DFT bin from DC in cycles per pixel (0 .. ~0.71), for rfft2 layout."""
    fy = np.fft.fftfreq(size_y)[:, None]
    fx = np.fft.rfftfreq(size_x)[None, :]
    return np.sqrt(fy**2 + fx**2)


def spectral_filter(pixels: np.ndarray, gain: np.ndarray) -> np.ndarray:
    """Multiply each channel's spectrum (rfft2 layout) by a real gain and transform back."""
    spectrum = np.fft.rfft2(pixels, axes=(0, 1)) * gain[:, :, None]
    return np.fft.irfft2(spectrum, s=pixels.shape[:2], axes=(0, 1))


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
    return donor.mean(axis=2, keepdims=True).repeat(3, axis=2) if is_gray(target) else donor


def _colour_gains(target: np.ndarray, shift: float, rng: np.random.Generator) -> np.ndarray:
    """Gains of +-(shift/2 .. shift) per channel (one shared gain for grey targets): a colour cast."""
    signs = rng.choice([-1.0, 1.0], size=1 if is_gray(target) else 3)
    return 1.0 + shift * signs * rng.uniform(0.5, 1.0, size=signs.shape)


def _paste(target: np.ndarray, source: np.ndarray, mask: np.ndarray, softness: float) -> np.ndarray:
    """`source` where the (Gaussian-softened) mask is 1, `target` where it is 0."""
    soft = ndimage.gaussian_filter(mask, sigma=softness)[:, :, None] if softness > 0 else mask[:, :, None]
    return (soft * source + (1.0 - soft) * target).astype(np.float32)


def _jpeg_round_trip(pixels: np.ndarray, quality: int) -> np.ndarray:
    """The pixels after saving as a baseline JPEG at `quality` and decoding again.

    Grey pixels go through a greyscale JPEG: chroma subsampling would tint them.
    """
    gray = is_gray(pixels)
    rounded = np.clip(np.rint(pixels), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(rounded[:, :, 0] if gray else rounded).save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return np.asarray(decoded.convert("RGB"), dtype=np.float64)
