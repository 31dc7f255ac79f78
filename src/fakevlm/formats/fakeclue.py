"""FakeClue's on-disk format: `data_json/{split}.json` plus one image tree per split.

A record is `{"image": <path relative to the split's image root>, "label": 0 (fake) | 1 (real),
"cate": <category>, "width": W, "height": H, "conversations": [{"from": "human", ...},
{"from": "gpt", ...}]}`. Extra keys are tolerated and kept in `original` (FakeClue-mini adds
`artifact` and `origin`); the gpt turn is optional (FakeClue-mini ships unannotated).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd
from PIL import Image

log = logging.getLogger(__name__)

CATEGORIES = ("animal", "human", "object", "scene", "satellite", "doc", "deepfake")
# FakeClue's label convention (dataset card): 0 = fake, 1 = real.
LABELS = {0: "fake", 1: "real"}
LABEL_CODES = {name: code for code, name in LABELS.items()}
PROMPT = "<image>Does the image looks real/fake?"  # sic, as stored in FakeClue
# How PNGs are written: fixed settings, so the same pixels always give the same bytes.
PNG_SAVE_ARGS = {"format": "PNG", "compress_level": 6}

# The manifest: the interface every later stage reads. Order matters for readability only.
MANIFEST_COLUMNS = (
    "id",
    "image_path",
    "label",
    "category",
    "split",
    "source",
    "width",
    "height",
    "sha256",
    "artifact_family",
    "artifact_region",
    "artifact_strength",
    "reference_answer",
    "original",
)
# pandas' own string dtype for text: missing values are NA (pd.isna) both here and after a Parquet
# round trip, where object columns of None would come back as str columns of NaN.
MANIFEST_DTYPES = {
    column: {"width": "int64", "height": "int64", "artifact_strength": "float64"}.get(column, "str")
    for column in MANIFEST_COLUMNS
}


def split_paths(root: str | Path, split: str) -> dict[str, str]:
    """Where a split of a FakeClue-layout tree lives: its image root and its annotation file.

    Paths stay relative when `root` is relative (posix separators), so they can be stored.
    """
    base = PurePosixPath(Path(root).as_posix())
    return {"images_root": str(base / split), "annotations": str(base / "data_json" / f"{split}.json")}


def read_fakeclue(
    annotations: str | Path, images_root: str | Path, *, source: str, split: str
) -> pd.DataFrame:
    """Read one FakeClue annotation file into manifest rows (columns `MANIFEST_COLUMNS`).

    Every image is opened and decoded, so a bad record fails here with the annotation file, the
    record index and the reason in the message, rather than later in training.
    Raises FileNotFoundError (missing JSON or image) or ValueError (anything malformed).
    """
    ann_path = Path(annotations)
    records = _load_records(ann_path)
    root = PurePosixPath(Path(images_root).as_posix())
    rows = [
        _row(record, f"{ann_path}: record {index}", root, source, split)
        for index, record in enumerate(records)
    ]
    frame = pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS))
    frame["id"] = _unique_ids(frame["id"].tolist(), ann_path)
    frame = frame.astype(MANIFEST_DTYPES)
    return frame.sort_values(["split", "id"], kind="stable").reset_index(drop=True)


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
    if not isinstance(record, Mapping):
        raise ValueError(f"{where}: expected a JSON object, got {type(record).__name__}")
    for key in ("image", "label", "cate"):
        if key not in record:
            raise ValueError(f"{where}: missing required key {key!r}")
    image = record["image"]
    if not isinstance(image, str) or not image:
        raise ValueError(f"{where}: 'image' must be a non-empty string, got {image!r}")
    posix = PurePosixPath(image)
    if posix.is_absolute() or ".." in posix.parts:
        raise ValueError(f"{where}: 'image' must be relative to the image root, got {image!r}")
    label = record["label"]
    # bool is an int in Python; True/False are not FakeClue labels.
    if isinstance(label, bool) or label not in LABELS:
        raise ValueError(f"{where}: 'label' must be 0 (fake) or 1 (real), got {label!r}")
    if record["cate"] not in CATEGORIES:
        raise ValueError(f"{where}: unknown category {record['cate']!r}; expected one of {CATEGORIES}")


def _load_records(path: Path) -> list[Any]:
    """The JSON list in an annotation file, with clear errors for a missing or broken file."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: annotation file not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: invalid JSON: {err}") from err
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of records, got {type(data).__name__}")
    return data


def _row(record: Any, where: str, root: PurePosixPath, source: str, split: str) -> dict[str, Any]:
    """One manifest row from one record; the image is decoded for its size and hashed."""
    validate_record(record, where)
    image_path = root / record["image"]
    width, height, digest = _image_facts(Path(image_path), where)
    family, region, strength = _artifact(record.get("artifact"), where)
    return {
        "id": f"{source}/{split}/{record['image']}",
        "image_path": image_path.as_posix(),
        "label": LABELS[record["label"]],
        "category": record["cate"],
        "split": split,
        "source": source,
        "width": width,
        "height": height,
        "sha256": digest,
        "artifact_family": family,
        "artifact_region": region,
        "artifact_strength": strength,
        "reference_answer": _gpt_answer(record.get("conversations"), where),
        "original": json.dumps(record, sort_keys=True, ensure_ascii=False),
    }


def _image_facts(path: Path, where: str) -> tuple[int, int, str]:
    """Width, height (decoded, not trusted from the record) and sha256 of the file bytes."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"{where}: image file not found: {path}") from None
    except OSError as err:
        raise ValueError(f"{where}: image file not readable: {path}: {err}") from err
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()  # a full decode: truncated files fail here, not in training
            width, height = image.size
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise ValueError(f"{where}: image not decodable: {path}: {err}") from err
    return width, height, hashlib.sha256(data).hexdigest()


def _artifact(artifact: Any, where: str) -> tuple[str | None, str | None, float]:
    """(family, region, strength) from FakeClue-mini's `artifact` key; absent -> (None, None, NaN)."""
    if artifact is None:
        return None, None, math.nan
    if not isinstance(artifact, Mapping):
        raise ValueError(f"{where}: 'artifact' must be an object or null, got {artifact!r}")
    strength = artifact.get("strength")
    if strength is None:
        strength = math.nan
    elif isinstance(strength, bool) or not isinstance(strength, int | float) or not 0 <= strength <= 1:
        raise ValueError(f"{where}: artifact strength must be a number in [0, 1], got {strength!r}")
    return artifact.get("family"), artifact.get("region"), float(strength)


def _gpt_answer(conversations: Any, where: str) -> str | None:
    """The first gpt turn's text: FakeClue's reference answer. None when unannotated."""
    if conversations is None:
        return None
    if not isinstance(conversations, list):
        raise ValueError(f"{where}: 'conversations' must be a list, got {type(conversations).__name__}")
    for turn in conversations:
        if isinstance(turn, Mapping) and turn.get("from") == "gpt":
            return str(turn.get("value", ""))
    return None


def _unique_ids(ids: list[str], path: Path) -> list[str]:
    """Ids must be unique: a repeated image path gets `#<record index>` (stable for the file)."""
    seen: set[str] = set()
    unique = []
    for index, identifier in enumerate(ids):
        if identifier in seen:
            log.warning("%s: record %d repeats image %s", path, index, identifier)
            identifier = f"{identifier}#{index}"
        seen.add(identifier)
        unique.append(identifier)
    return unique


def _save_image(image: Image.Image, path: Path) -> None:
    """Save with the format its suffix names; PNGs with PNG_SAVE_ARGS, so the bytes are repeatable."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".png":
        image.save(path, **PNG_SAVE_ARGS)
    else:
        image.save(path)
