"""Throughput of ingestion's image reading vs plain PIL decode + sha256 of the same files, one run.

    .venv/bin/python bench/ingestion.py [--images N] [--size PX] [--workers W] [--folder DIR]

Without --folder it writes N random PNGs (half real/, half fake/) to a temporary folder. Prints
images/s of the `folder` reader (decoding in W processes) and of a single-process loop, and their
ratio (goal >= 0.8).
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from fakevlm.formats import read_folder


def make_folder(root: Path, count: int, size: int) -> None:
    """`count` random-noise PNGs of size x size under root/real and root/fake."""
    rng = np.random.default_rng(0)
    for index in range(count):
        path = root / ("real" if index % 2 else "fake") / f"{index:06d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)


def plain(files: list[Path]) -> float:
    """Seconds to read, fully decode and hash every file in one loop."""
    start = time.perf_counter()
    for path in files:
        data = path.read_bytes()
        with Image.open(path) as image:
            image.load()
        hashlib.sha256(data).hexdigest()
    return time.perf_counter() - start


def ingest(root: Path, workers: int) -> tuple[float, int]:
    """Seconds the folder reader takes, and how many rows it accepted."""
    start = time.perf_counter()
    rows, _ = read_folder({"name": "bench", "images": str(root), "category": "scene", "split": "test",
                           "workers": workers})
    return time.perf_counter() - start, len(rows)


def main() -> None:
    """Parse arguments, build or take the folder, time both, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--folder", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        root = args.folder or Path(scratch)
        if args.folder is None:
            make_folder(root, args.images, args.size)
        files = sorted(p for label in ("real", "fake") for p in (root / label).rglob("*") if p.is_file())
        plain(files[: min(50, len(files))])  # warm the page cache for both measurements alike
        base = plain(files)
        took, accepted = ingest(root, args.workers)
    print(f"images: {len(files)} (accepted {accepted}), workers: {args.workers}")
    print(f"plain PIL decode + sha256: {len(files) / base:.1f} images/s")
    print(f"ingestion reader:          {accepted / took:.1f} images/s")
    print(f"ratio (ingestion / plain): {base / took * accepted / len(files):.2f}  (goal >= 0.8)")


if __name__ == "__main__":
    main()
