"""Generation throughput: batched with the KV cache vs one image at a time, same model, one run.

    .venv/bin/python bench/generation.py [--model DIR] [--images N] [--batch-size B] [--max-new-tokens T]

--model is a `save_pretrained` folder (default: the default run's data/06_models/fakevlm). Images
are random 64 px pictures; both ways answer the same images with the same greedy decoding, so
the answers must agree (checked). Prints images/s of each and the ratio (goal >= 4).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from PIL import Image

from fakevlm.model import FakeVLM

QUESTION = "Does the image looks real/fake?"


def timed(model: FakeVLM, images: list[Image.Image], batch_size: int, max_new_tokens: int) -> tuple[float, list[str]]:
    start = time.perf_counter()
    answers = model.generate(images, QUESTION, max_new_tokens, batch_size)
    return time.perf_counter() - start, answers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("data/06_models/fakevlm"))
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    args = parser.parse_args()
    model = FakeVLM.from_pretrained(args.model)
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)) for _ in range(args.images)]
    timed(model, images[:2], 2, 8)  # warm-up: first calls allocate and pick kernels
    single, single_answers = timed(model, images, 1, args.max_new_tokens)
    batched, batched_answers = timed(model, images, args.batch_size, args.max_new_tokens)
    agree = sum(a == b for a, b in zip(single_answers, batched_answers))
    print(f"images: {args.images}, max new tokens: {args.max_new_tokens}, answers that agree: {agree}/{args.images}")
    print(f"one at a time:       {args.images / single:.1f} images/s")
    print(f"batched ({args.batch_size:>3} / call): {args.images / batched:.1f} images/s")
    print(f"ratio (batched / single): {single / batched:.2f}  (goal >= 4)")


if __name__ == "__main__":
    main()
