"""Source pictures: photographs found inside installed packages, rendered terrain and documents,
and the random crop every real and fake image starts from."""

from __future__ import annotations

import functools
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps
from scipy import ndimage


@dataclass
class Photo:
    """A source picture (or a stack, or a recipe for rendered ones) and where it came from."""

    name: str
    spec: Mapping[str, Any]
    images: list[Image.Image] = field(default_factory=list)  # empty: rendered per use (documents)
    files: list[Path] = field(default_factory=list)  # kind folder: files opened per use
    root: Path = Path()  # the package folder `files` are relative to

    @property
    def picture_count(self) -> int:
        """How many pictures `pick_picture` draws from (a rendered page counts one)."""
        return len(self.files) or len(self.images) or 1


DEBIAN_ROOTS = {
    "tuxpaint-stamps-default": "/usr/share/tuxpaint/stamps",
    "xplanet-images": "/usr/share/xplanet/images",
    "mate-backgrounds": "/usr/share/backgrounds/mate",
    "opencv-doc": "/usr/share/doc/opencv-doc/examples/data",
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


def draw_crop(
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
    picture, file_name = pick_picture(photo, rng, params["documents"])
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


def pick_picture(photo: Photo, rng: np.random.Generator, documents: Mapping[str, Any]) -> tuple[Image.Image, str]:
    """One picture of a photo spec, drawn with `rng` (one file of a folder, one page rendered, one
    image of a stack), and the file name its records give."""
    file_name = photo.spec.get("file", "")
    if photo.files:
        pick = int(rng.integers(len(photo.files)))
        return _open_rgb(photo.files[pick]), photo.files[pick].relative_to(photo.root).as_posix()
    if not photo.images:
        return render_document(rng, documents), file_name
    if len(photo.images) == 1:
        return photo.images[0], file_name
    pick = int(rng.integers(len(photo.images)))
    return photo.images[pick], f"{file_name}[{pick}]"


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
