"""FakeClue's on-disk format: `data_json/{split}.json` plus one image tree per split.

A record is `{"image": <path relative to the split's image root>, "label": 0 (fake) | 1 (real),
"cate": <category>, "width": W, "height": H, "conversations": [{"from": "human", ...},
{"from": "gpt", ...}]}`. Extra keys are tolerated and kept in `original` (FakeClue-mini adds
`artifact` and `origin`); the gpt turn is optional (FakeClue-mini ships unannotated).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from PIL import Image

from fakevlm.formats.common import (
    CATEGORIES,
    MANIFEST_COLUMNS,
    MANIFEST_DTYPES,
    Entry,
    Ingested,
    RecordError,
    check_category,
    enumerate_list,
    finish,
    load_json,
    open_root,
    parse_records,
    require,
    safe_relative,
    workers_of,
)

log = logging.getLogger(__name__)

__all__ = ["CATEGORIES", "MANIFEST_COLUMNS", "MANIFEST_DTYPES", "read_fakeclue", "split_paths",
           "validate_record", "write_fakeclue_split"]

# FakeClue's label convention (dataset card): 0 = fake, 1 = real.
LABELS = {0: "fake", 1: "real"}
LABEL_CODES = {name: code for code, name in LABELS.items()}
QUESTION = "Does the image looks real/fake?"  # sic: FakeClue's, which a model trained on it answers
PROMPT = "<image>" + QUESTION  # the human turn as stored in FakeClue
# How PNGs are written: fixed settings, so the same pixels always give the same bytes.
PNG_SAVE_ARGS = {"format": "PNG", "compress_level": 6}
REQUIRED_KEYS = ("images", "annotations", "split")


def split_paths(root: str | Path, split: str) -> dict[str, str]:
    """Where a split of a FakeClue-layout tree lives: its image root and its annotation file.

    Paths stay relative when `root` is relative (posix separators), so they can be stored.
    """
    base = PurePosixPath(Path(root).as_posix())
    return {"images_root": str(base / split), "annotations": str(base / "data_json" / f"{split}.json")}


def read_fakeclue(source: Mapping[str, Any]) -> Ingested:
    """Manifest rows and rejects of one FakeClue split: `annotations` (data_json file) + `images`.

    `images` is the split's image folder or FakeClue's released archive (`test.zip`), read in
    place. Every image is decoded, so a bad record is quarantined here, not found in training.
    A missing or broken annotation file raises (FileNotFoundError, ValueError naming the position).
    """
    path = Path(source["annotations"])
    root = open_root(source["images"])
    entries, rejects = parse_records(enumerate_list(load_json(path), path), _entry, str(source["name"]))
    return finish(entries, rejects, root, source=str(source["name"]), split=str(source["split"]),
                  workers=workers_of(source))


def write_fakeclue_split(
    root: str | Path,
    split: str,
    records: Sequence[Mapping[str, Any]],
    images: Mapping[str, Image.Image],
) -> None:
    """Write one split: `root/data_json/{split}.json` and each image at `root/{split}/<image>`.

    `images` maps each record's `image` path to its picture; both sides must match exactly so
    the written JSON never points at a file that was not written.
    """
    root = Path(root)
    ann_path = root / "data_json" / f"{split}.json"
    for index, record in enumerate(records):
        validate_record(record, f"{ann_path}: record {index}")
    named = [str(record["image"]) for record in records]
    missing, unused = set(named) - set(images), set(images) - set(named)
    if missing or unused:
        raise ValueError(
            f"{ann_path}: records and images differ: no image for {sorted(missing)[:5]}, "
            f"no record for {sorted(unused)[:5]}"
        )
    for name in sorted(images):
        _save_image(images[name], root / split / name)
    ann_path.parent.mkdir(parents=True, exist_ok=True)
    # sort_keys + fixed indent: the same records give byte-identical files (DVC hashes them).
    text = json.dumps([dict(r) for r in records], indent=2, sort_keys=True, ensure_ascii=False)
    ann_path.write_text(text + "\n", encoding="utf-8")


def validate_record(record: Any, where: str) -> None:
    """Raise ValueError (message starts with `where`) unless `record` is a usable FakeClue record."""
    try:
        _entry(where, record)
    except RecordError as err:
        raise ValueError(err.message) from None


def _entry(where: str, record: Any) -> list[Entry]:
    """The one image a FakeClue record names, checked; RecordError says what is wrong."""
    record = require(record, ("image", "label", "cate"), where)
    image = safe_relative(record["image"], where)
    label = record["label"]
    # bool is an int in Python; True/False are not FakeClue labels.
    if isinstance(label, bool) or label not in LABELS:
        raise RecordError("bad_label", f"{where}: 'label' must be 0 (fake) or 1 (real), got {label!r}")
    return [Entry(
        where=where,
        image=image,
        label=LABELS[label],
        category=check_category(record["cate"], where),
        original=record,
        reference_answer=_gpt_answer(record.get("conversations"), where),
        artifact=_artifact(record.get("artifact"), where),
    )]


def _artifact(artifact: Any, where: str) -> tuple[str | None, str | None, float]:
    """(family, region, strength) from FakeClue-mini's `artifact` key; absent -> (None, None, NaN)."""
    if artifact is None:
        return None, None, math.nan
    if not isinstance(artifact, Mapping):
        raise RecordError("bad_field", f"{where}: 'artifact' must be an object or null, got {artifact!r}")
    strength = artifact.get("strength")
    if strength is None:
        strength = math.nan
    elif isinstance(strength, bool) or not isinstance(strength, int | float) or not 0 <= strength <= 1:
        raise RecordError("bad_field", f"{where}: artifact strength must be a number in [0, 1], got {strength!r}")
    return artifact.get("family"), artifact.get("region"), float(strength)


def _gpt_answer(conversations: Any, where: str) -> str | None:
    """The first gpt turn's text: FakeClue's reference answer. None when unannotated."""
    if conversations is None:
        return None
    if not isinstance(conversations, list):
        raise RecordError("bad_field", f"{where}: 'conversations' must be a list, got {type(conversations).__name__}")
    for turn in conversations:
        if isinstance(turn, Mapping) and turn.get("from") == "gpt":
            return str(turn.get("value", ""))
    return None


def _save_image(image: Image.Image, path: Path) -> None:
    """Save with the format its suffix names; PNGs with PNG_SAVE_ARGS, so the bytes are repeatable."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".png":
        image.save(path, **PNG_SAVE_ARGS)
    else:
        image.save(path)
