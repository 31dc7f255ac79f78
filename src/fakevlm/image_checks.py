"""Facts about image files that validation checks, and the leakage searches built on them.

`image_facts` opens each file once: its sha256, whether it decodes (bounded by a pixel limit, so a
decompression bomb is reported instead of filling memory), its size and mode, the conversion the
loaders' `convert("RGB")` will apply, its EXIF orientation, and a perceptual hash. The leakage
functions compare those facts between rows: exact copies with conflicting labels, and
near-duplicates in different splits.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from collections.abc import Collection, Sequence
from itertools import combinations
from typing import Any

import numpy as np
import pandas as pd
from PIL import ExifTags, Image

from fakevlm.formats.common import read_image_bytes

# Columns `image_facts` returns, with nullable dtypes: "unknown" (no path, no file, not decoded)
# stays distinct from False/0, and GX skips nulls, so each fault is reported once, by its cause.
FACT_DTYPES = {
    "file_exists": "boolean",
    "file_sha256": "object",
    "pixel_count": "Int64",
    "within_pixel_limit": "boolean",
    "decodes": "boolean",
    "decoded_width": "Int64",
    "decoded_height": "Int64",
    "aspect_ratio": "Float64",
    "image_mode": "object",
    "mode_normalisation": "object",
    "exif_orientation": "Int64",
    "perceptual_hash": "object",
    "decode_error": "object",
}

# Perceptual hash: the 16x16 lowest DCT frequencies of a 64x64 grey image, one bit each (256 bits).
# Measured on FakeClue-mini (64 px crops): JPEG re-encoding or resizing a copy moves it by <= 8 bits
# in 95% of cases, while the closest different crops of one photo in train and test are 14 apart.
# An 8x8 (64-bit) hash cannot tell those apart: shifted crops of one photo come within 2 bits.
HASH_SIDE = 16
_HASH_RESOLUTION = 64
HASH_BITS = HASH_SIDE * HASH_SIDE
_k, _n = np.meshgrid(np.arange(_HASH_RESOLUTION), np.arange(_HASH_RESOLUTION), indexing="ij")
_DCT = np.cos(np.pi * (2 * _n + 1) * _k / (2 * _HASH_RESOLUTION))  # DCT-II basis, rows = frequencies

# Bounds the pairwise distance matrix held in memory at once (bytes), so large splits are compared
# chunk by chunk.
_CHUNK_BYTES = 1 << 25


def image_facts(image_paths: pd.Series, max_pixels: int = Image.MAX_IMAGE_PIXELS) -> pd.DataFrame:
    """One row of facts (FACT_DTYPES) per path, on the same index.

    Decoding runs `load()`, not just the header, so truncated files fail here and not in training.
    """
    rows = [inspect_image(path, max_pixels) for path in image_paths]
    return pd.DataFrame(rows, columns=list(FACT_DTYPES), index=image_paths.index).astype(FACT_DTYPES)


def inspect_image(path: Any, max_pixels: int) -> dict[str, Any]:
    """The facts about one image file; never raises for a bad file."""
    facts: dict[str, Any] = dict.fromkeys(FACT_DTYPES)
    if not isinstance(path, str):
        return facts  # no path: nothing is known, not even that the file is missing
    data = read_image_bytes(path)
    facts["file_exists"] = data is not None
    if data is None:
        return facts
    facts["file_sha256"] = hashlib.sha256(data).hexdigest()
    try:
        # PIL only warns between its limit and twice that; as an error it cannot slip through.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                facts["pixel_count"] = image.width * image.height
                if facts["pixel_count"] > max_pixels:
                    facts.update(within_pixel_limit=False, decode_error=(
                        f"{facts['pixel_count']} pixels, more than the limit of {max_pixels}; not decoded"))
                    return facts
                facts["within_pixel_limit"] = True
                image.load()
                facts.update(decodes=True, decoded_width=image.width, decoded_height=image.height,
                             aspect_ratio=max(image.size) / max(min(image.size), 1), image_mode=image.mode,
                             mode_normalisation=mode_normalisation(image), exif_orientation=exif_orientation(image),
                             perceptual_hash=perceptual_hash(image))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        facts.update(within_pixel_limit=False, decodes=None, decode_error=f"{type(error).__name__}: {error}")
    except Exception as error:  # noqa: BLE001 - whatever PIL raises, the file is unusable
        facts.update(decodes=False, decode_error=f"{type(error).__name__}: {error}")
    return facts


def mode_normalisation(image: Image.Image) -> str | None:
    """What the loaders' `convert("RGB")` does to this image, e.g. "CMYK->RGB"; None for RGB."""
    if image.mode == "RGB":
        return None
    has_alpha = "A" in image.getbands() or "transparency" in image.info
    return f"{image.mode}->RGB" + (" (alpha dropped)" if has_alpha else "")


def exif_orientation(image: Image.Image) -> int | None:
    """The EXIF orientation tag when it asks for a rotation or flip (2-8), else None.

    Such an image is stored sideways or mirrored; `ImageOps.exif_transpose` shows it upright.
    """
    orientation = image.getexif().get(ExifTags.Base.Orientation)
    return int(orientation) if orientation not in (None, 1) else None


def perceptual_hash(image: Image.Image) -> str:
    """A 256-bit DCT hash (pHash) as 64 hex digits: close for copies, far for different pictures."""
    grey = np.asarray(image.convert("L").resize((_HASH_RESOLUTION,) * 2, Image.Resampling.LANCZOS), dtype=np.float64)
    low = (_DCT @ grey @ _DCT.T)[:HASH_SIDE, :HASH_SIDE].ravel()
    # The DC term (mean brightness) dwarfs the rest, so it is left out of the median.
    return np.packbits(low > np.median(low[1:])).tobytes().hex()


def hamming_distances(hashes_a: Sequence[str], hashes_b: Sequence[str]) -> np.ndarray:
    """Bits that differ between every hash of `hashes_a` and every hash of `hashes_b` (len_a x len_b)."""
    a, b = _hash_bytes(hashes_a), _hash_bytes(hashes_b)
    distances = np.empty((len(a), len(b)), dtype=np.int32)
    step = max(1, _CHUNK_BYTES // max(1, b.size))
    for start in range(0, len(a), step):
        chunk = a[start:start + step, None, :] ^ b[None, :, :]
        distances[start:start + step] = np.bitwise_count(chunk).sum(axis=2, dtype=np.int32)
    return distances


def _hash_bytes(hashes: Sequence[str]) -> np.ndarray:
    """Hex hashes as an (n, bytes) uint8 array."""
    return np.array([np.frombuffer(bytes.fromhex(h), dtype=np.uint8) for h in hashes], dtype=np.uint8).reshape(
        len(hashes), HASH_BITS // 8)


def cross_split_pairs(hashes: pd.Series, splits: pd.Series, max_distance: int,
                      shared_splits: Collection[Collection[str]] = ()) -> list[tuple[int, int, int]]:
    """Pairs of rows in different splits whose hashes differ by at most `max_distance` bits.

    Returns (row_a, row_b, distance) with row_a < row_b, sorted; rows are index labels of `hashes`.
    Rows without a hash (not decoded) are skipped; split pairs in `shared_splits` (e.g. two test
    splits) may share images, since neither trains the model.
    """
    allowed = {frozenset(pair) for pair in shared_splits}
    known = hashes.notna() & splits.notna()
    groups = {split: hashes[known & (splits == split)] for split in sorted(splits[known].unique())}
    pairs = []
    for split_a, split_b in combinations(groups, 2):
        if frozenset((split_a, split_b)) in allowed:
            continue
        group_a, group_b = groups[split_a], groups[split_b]
        distances = hamming_distances(group_a.tolist(), group_b.tolist())
        for i, j in zip(*np.nonzero(distances <= max_distance)):
            row_a, row_b = group_a.index[i], group_b.index[j]
            pairs.append((min(row_a, row_b), max(row_a, row_b), int(distances[i, j])))
    return sorted(pairs)


def conflicting_copies(ids: pd.Series, sha256: pd.Series, labels: pd.Series) -> pd.Series:
    """Per row, the ids of byte-identical files with another label, comma-separated; None if none.

    The same file cannot be both real and fake, so every row of such a group is suspect.
    """
    conflicts = pd.Series(None, index=ids.index, dtype=object)
    # A missing label is its own fault (label_not_null), not a conflict.
    frame = pd.DataFrame({"id": ids, "sha": sha256, "label": labels}).dropna(subset=["sha", "label"])
    for _, group in frame.groupby("sha"):
        if group["label"].nunique() < 2:
            continue
        for row, label in group["label"].items():
            conflicts[row] = ", ".join(str(other) for other in group.loc[group["label"] != label, "id"])
    return conflicts
