"""The data set: every split's records and images, a family per fake, the held-out splits."""

from __future__ import annotations

import hashlib
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from collections.abc import Mapping
from typing import Any

import numpy as np
from PIL import Image

from fakevlm import in_the_wild, networks
from fakevlm.fakeclue_mini.network_families import NETWORK_MAKERS, like_the_crop
from fakevlm.fakeclue_mini.pixels import finish
from fakevlm.fakeclue_mini.simulated import SIMULATORS, WHOLE_IMAGE, Scene, checkerboard_perturbation
from fakevlm.fakeclue_mini.sources import Photo, draw_crop, load_photos
from fakevlm.formats.fakeclue import CATEGORIES, LABEL_CODES, PROMPT
from fakevlm.image_checks import hamming_distances, perceptual_hash


def build(params: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """All splits: `{split: {"records": [record, ...], "images": {record image path: PIL image}}}`.

    Records are sorted by image path; the same params give the same pixels and records. Each split
    named in `heldout` holds only its held-out families' fakes; no other split ever has one.
    """
    unknown = set(params["categories"]) - set(CATEGORIES)
    if unknown:
        raise ValueError(f"fakeclue_mini: unknown categories {sorted(unknown)}; expected {CATEGORIES}")
    photos = load_photos(params["photos"], params.get("debian_roots") or {})
    board = params["checkerboard"]
    perturbation = checkerboard_perturbation(board["kernel"], board["kernel_seed"], board["texture"])
    # Training splits are drawn last and kept apart from the evaluation splits: a training crop
    # whose perceptual hash lies within `distinct.distance` bits of an evaluation image is drawn
    # again (validation's near-duplicate gate uses the same hash), so large training sets can be
    # made from few source photographs without leaking test images.
    distinct = params.get("distinct") or {}
    train_splits = set(distinct.get("train_splits", []))
    workers = int(params.get("workers", 1))
    splits: dict[str, dict[str, Any]] = {}
    eval_hashes: list[str] = []
    for is_train in (False, True):
        counts = {split: int(count) for split, count in sorted(params["per_category"].items())
                  if (split in train_splits) == is_train}
        tasks = [(split, category, index) for split, count in counts.items()
                 for category in sorted(params["categories"]) for index in range(count)]
        drawn = draw_all(tasks, (params, photos, perturbation, eval_hashes if is_train else []), workers)
        for split in counts:
            pairs = [pair for task, pair in zip(tasks, drawn) if task[0] == split]
            records = sorted((record for record, _ in pairs), key=lambda record: record["image"])
            splits[split] = {"records": records, "images": {record["image"]: image for record, image in pairs}}
            if train_splits and not is_train:
                eval_hashes += [perceptual_hash(image) for _, image in pairs]
    wild = params.get("wild")
    if wild:  # other sources entirely: nothing in it can be near a training crop
        splits[wild["split"]] = in_the_wild.build(wild, params["seed"])
    if wild and (wild.get("train") or {}).get("enabled"):  # the generators kept out of the in-the-wild split
        extra = in_the_wild.build_train(wild, params["seed"], photos, lambda image: far_from(image, eval_hashes, distinct),
                                        distinct.get("max_attempts", 0), params["documents"])
        target = splits.setdefault(wild["train"]["split"], {"records": [], "images": {}})
        target["images"].update(extra["images"])
        target["records"] = sorted(target["records"] + extra["records"], key=lambda record: record["image"])
    return dict(sorted(splits.items()))


_context: tuple | None = None  # (params, photos, perturbation, eval_hashes) of draw_all's processes


def _set_context(*context: Any) -> None:
    global _context
    _context = context


def far_from(image: Image.Image, eval_hashes: list[str], distinct: Mapping[str, Any]) -> bool:
    """Whether an image is more than `distinct.distance` bits from every evaluation image's hash."""
    return not eval_hashes or hamming_distances([perceptual_hash(image)], eval_hashes).min() > distinct["distance"]


def _draw(task: tuple[str, str, int]) -> tuple[dict[str, Any], Image.Image]:
    """One example of `_context`, drawn again while it is near an evaluation image."""
    params, photos, perturbation, eval_hashes = _context
    distinct = params.get("distinct") or {}
    attempt = 0
    while True:
        record, image = make_example(params, photos, perturbation, *task, attempt)
        if not eval_hashes or attempt >= distinct["max_attempts"] or far_from(image, eval_hashes, distinct):
            return record, image
        attempt += 1


def draw_all(tasks: list[tuple[str, str, int]], context: tuple, workers: int) -> list[tuple[dict[str, Any], Image.Image]]:
    """(record, image) of every (split, category, index) task, in task order; in `workers`
    processes when there are several. Each example has its own random generator, so the pixels do
    not depend on the number of processes."""
    if workers <= 1 or len(tasks) < 2:
        _set_context(*context)
        try:
            return [_draw(task) for task in tasks]
        finally:
            _set_context(None, None, None, None)
    # spawned, not forked: a fork of a process whose OpenMP pool has run (torch, ncnn) hangs in the
    # child's first parallel region, as it did under pytest once torch had trained
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, spawn, initializer=_set_context, initargs=context) as pool:
        return list(pool.map(_draw, tasks, chunksize=max(1, min(64, len(tasks) // (workers * 8)))))


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
    pixels, origin = draw_crop(params, photos, category, rng)
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

    The held-out families (unseen "generators", one name or a list) of a split in `heldout` are
    its only families, in equal shares, and never appear in any other split, so that split measures
    generalisation to them.
    """
    heldout = heldout_families(params)
    if split in heldout:
        return _family(dict.fromkeys(heldout[split], 1), ordinal, known_families(params))
    held = set().union(*heldout.values())
    weights = params["families"].get(category, params["families"]["default"])
    kept = {name: weight for name, weight in weights.items() if name not in held}
    if not kept:
        raise ValueError(f"fakeclue_mini: category {category!r} has no family besides the held-out {sorted(held)}")
    return _family(kept, ordinal, known_families(params))


def heldout_families(params: Mapping[str, Any]) -> dict[str, list[str]]:
    """split -> the families it holds out (`heldout` names one family or a list)."""
    return {split: [names] if isinstance(names, str) else list(names)
            for split, names in (params.get("heldout") or {}).items()}


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
