"""FakeClue-mini: a small, offline, deterministic data set in FakeClue's format.

Real images are random crops of photographs that installed packages ship (scikit-image,
scikit-learn, matplotlib) plus documents rendered with Pillow's default font. Fakes are other
random crops passed through an artifact simulator: one small pure function per artifact family,
each modelled on a trace that the literature finds in generated images. Every image, real or fake,
ends with the same step (sensor-like grain, then lossless PNG), so nothing at the file level tells
the label. All numbers live in `conf/base/parameters_ingestion.yml` (`ingestion.fakeclue_mini`).

This module is pure: `build(params)` returns PIL images and FakeClue records; it writes nothing.
"""

from __future__ import annotations

import functools
import hashlib
import io
import math
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps
from scipy import ndimage

from fakevlm.formats.fakeclue import CATEGORIES, LABEL_CODES, PNG_SAVE_ARGS, PROMPT

WHOLE_IMAGE = "the whole image"
FACE = "the face"
# (row, column) of a quadrant -> how an answer names it.
QUADRANTS = {(0, 0): "the upper left", (0, 1): "the upper right", (1, 0): "the lower left", (1, 1): "the lower right"}
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


# --------------------------------------------------------------------------------------------
# The data set
# --------------------------------------------------------------------------------------------


def build(params: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """All splits: `{split: {"records": [record, ...], "images": {record image path: PIL image}}}`.

    Records are sorted by image path; the same params give the same pixels and records.
    """
    unknown = set(params["categories"]) - set(CATEGORIES)
    if unknown:
        raise ValueError(f"fakeclue_mini: unknown categories {sorted(unknown)}; expected {CATEGORIES}")
    photos = load_photos(params["photos"])
    board = params["checkerboard"]
    perturbation = checkerboard_perturbation(board["kernel"], board["kernel_seed"], board["texture"])
    splits: dict[str, dict[str, Any]] = {}
    for split, count in sorted(params["per_category"].items()):
        records, images = [], {}
        for category in sorted(params["categories"]):
            for index in range(int(count)):
                record, image = make_example(params, photos, perturbation, split, category, index)
                records.append(record)
                images[record["image"]] = image
        records.sort(key=lambda record: record["image"])
        splits[split] = {"records": records, "images": images}
    return splits


def make_example(
    params: Mapping[str, Any],
    photos: Mapping[str, Photo],
    perturbation: np.ndarray,
    split: str,
    category: str,
    index: int,
) -> tuple[dict[str, Any], Image.Image]:
    """One record and its image. Even indices are real, odd ones fake: exactly half and half."""
    rng = example_rng(params["seed"], split, category, index)
    label = "real" if index % 2 == 0 else "fake"
    pixels, origin = _draw_crop(params, photos, category, rng)
    artifact = None
    if label == "fake":
        family = _family(params["families"], category, index // 2)
        lo, hi = params["strength"]
        strength = round(float(rng.uniform(lo, hi)), 3)
        pixels, region = _apply(family, pixels, strength, rng, params, photos, category, perturbation)
        artifact = {"family": family, "region": region, "strength": strength}
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


def example_rng(seed: int, split: str, category: str, index: int) -> np.random.Generator:
    """A generator per image, so an image does not change when others are added or removed."""
    return np.random.default_rng([int(seed), _code(split), _code(category), int(index)])


def _code(text: str) -> int:
    """A stable 32-bit number for a name (Python's hash() is salted per process)."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big")


def _family(families: Mapping[str, Mapping[str, int]], category: str, ordinal: int) -> str:
    """Families in exact shares: the n-th fake of a category takes the n-th slot of a weighted cycle."""
    weights = families.get(category, families["default"])
    cycle = [name for name, weight in sorted(weights.items()) for _ in range(int(weight))]
    return cycle[ordinal % len(cycle)]


def _apply(
    family: str,
    pixels: np.ndarray,
    strength: float,
    rng: np.random.Generator,
    params: Mapping[str, Any],
    photos: Mapping[str, Photo],
    category: str,
    perturbation: np.ndarray,
) -> tuple[np.ndarray, str]:
    """Run one simulator; global ones may be confined to a random quadrant. Returns (pixels, region)."""
    if family == "face_blend":
        donor, _ = _draw_crop(params, photos, category, rng)
        return face_blend(pixels, donor, strength, rng, **params["face_blend"]), FACE
    if family == "checkerboard":
        board = params["checkerboard"]
        faked = checkerboard(pixels, strength, perturbation, board["amplitude"], board["detail"])
    elif family == "oversmoothing":
        faked = oversmoothing(pixels, strength, rng, **params["oversmoothing"])
    else:
        raise ValueError(f"fakeclue_mini: unknown artifact family {family!r}")
    if rng.random() >= params["quadrant_share"]:
        return faked, WHOLE_IMAGE
    row, col = int(rng.integers(2)), int(rng.integers(2))
    half_h, half_w = pixels.shape[0] // 2, pixels.shape[1] // 2
    rows, cols = slice(row * half_h, (row + 1) * half_h), slice(col * half_w, (col + 1) * half_w)
    confined = pixels.copy()
    confined[rows, cols] = faked[rows, cols]
    return confined, QUADRANTS[(row, col)]


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

    def faked(level: float) -> np.ndarray:
        return smooth + unit * np.maximum(noise_floor, level * local_std)

    target = _png_size(pixels)
    low, high = noise_range
    for _ in range(search_steps):  # bisection: PNG size grows with the noise level
        middle = (low + high) / 2
        low, high = (middle, high) if _png_size(faked(middle)) < target else (low, middle)
    return faked((low + high) / 2).astype(np.float32)


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
    gray = _is_gray(target)
    donor = donor.mean(axis=2, keepdims=True).repeat(3, axis=2) if gray else donor
    sigma = donor_blur * strength
    donor = ndimage.gaussian_filter(donor.astype(np.float64), sigma=(sigma, sigma, 0), mode="reflect")
    signs = rng.choice([-1.0, 1.0], size=1 if gray else 3)
    gains = 1.0 + colour_shift * strength * signs * rng.uniform(0.5, 1.0, size=signs.shape)
    donor = donor * gains  # broadcasts: one gain for grey faces, one per channel otherwise
    yy, xx = np.mgrid[0:size_y, 0:size_x].astype(np.float64)
    cy = size_y * (0.5 + rng.uniform(-centre_shift, centre_shift))
    cx = size_x * (0.5 + rng.uniform(-centre_shift, centre_shift))
    ry, rx = size_y * rng.uniform(*radius_y), size_x * rng.uniform(*radius_x)
    mask = (((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0).astype(np.float64)
    mask = ndimage.gaussian_filter(mask, sigma=edge_softness * min(size_x, size_y))[:, :, None]
    return (mask * donor + (1.0 - mask) * target).astype(np.float32)


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


def package_data_dir(package: str) -> Path:
    """Where a package keeps its sample pictures; found through the package, never hard-coded."""
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


def load_photos(specs: Mapping[str, Mapping[str, Any]]) -> dict[str, Photo]:
    """Every configured picture, as RGB PIL images (documents are rendered later, per use)."""
    return {name: Photo(name, spec, _load_images(spec)) for name, spec in sorted(specs.items())}


def _load_images(spec: Mapping[str, Any]) -> list[Image.Image]:
    """The RGB pictures of one photo spec, by its `kind` (image, stack, dem, document)."""
    kind = spec.get("kind", "image")
    if kind == "document":
        return []
    path = package_data_dir(spec["package"]) / spec["file"]
    if kind == "image":
        with Image.open(path) as image:
            return [_to_rgb(image)]
    if kind == "stack":  # e.g. lfw_subset.npy: (n, h, w) floats in [0, 1]
        stack = np.load(path)[: spec["count"]]
        return [Image.fromarray(np.rint(np.clip(a, 0, 1) * 255).astype(np.uint8)).convert("RGB") for a in stack]
    if kind == "dem":
        with np.load(path) as arrays:
            return [render_terrain(arrays[spec["array"]], spec)]
    raise ValueError(f"fakeclue_mini: unknown photo kind {kind!r} for {spec['file']}")


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
    """A random crop of a random picture of the category, resized: (float32 pixels, origin)."""
    photo = photos[params["categories"][category][int(rng.integers(len(params["categories"][category])))]]
    spec = photo.spec
    file_name = spec.get("file", "")
    if not photo.images:
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
