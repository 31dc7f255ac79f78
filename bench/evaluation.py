"""Evaluation speed on the LLaVA-1.5-shaped model: fakevlm's evaluation path (`FakeVLM.answer`:
batched, KV cache, verdict probabilities) against FakeVLM's released procedure, reimplemented from
its description (FakeVLM-FACTS: one `generate` per image, greedy, verdict parsed from the text).

    .venv/bin/python bench/evaluation.py [--images 16] [--batch-size 8] [--max-new-tokens 64]

The model is made here (fakevlm.llava15, conf/smoke/gpu_smoke.yml's size, random weights), the
images are random 336-px pictures. Both paths get the same prompt, so their greedy answers must be
the same (checked); FakeVLM's released script sends the raw prompt without the chat template it
trained with, a difference of prompt, not of speed, that fakevlm does not copy. Its scripts/eval.py
was not in the stored snapshot of lingcco/FakeVLM, so batch size 1 is the description's, not read
from the file. Prints images/s of each and the ratio (goal >= 3).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import yaml
from PIL import Image

from fakevlm.llava15 import build, corpus_from
from fakevlm.metrics import parse_verdict
from fakevlm.model import FakeVLM, build_prompt

QUESTION = "Does the image looks real/fake?"


def released_procedure(fakevlm: FakeVLM, images: list[Image.Image], max_new_tokens: int) -> list[str]:
    """One image per `generate`, the answer decoded and parsed, as FakeVLM's eval script loops."""
    prompt = build_prompt(fakevlm.processor, QUESTION)
    answers = []
    with torch.no_grad():
        for image in images:
            inputs = fakevlm.processor(images=image, text=prompt, return_tensors="pt")
            output = fakevlm.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
            text = fakevlm.processor.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
            answers.append(text.strip())
            parse_verdict(text)
    return answers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    args = parser.parse_args()
    params = yaml.safe_load(open("conf/smoke/gpu_smoke.yml"))["llava15"]
    fakevlm = build(params, corpus_from(params["corpus_files"], params["question"]))
    fakevlm.model.eval()
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (336, 336, 3), dtype=np.uint8)) for _ in range(args.images)]
    fakevlm.answer(images[:2], QUESTION, 4, 2)   # warm-up: first calls allocate and pick kernels

    start = time.perf_counter()
    released = released_procedure(fakevlm, images, args.max_new_tokens)
    released_rate = len(images) / (time.perf_counter() - start)
    start = time.perf_counter()
    ours, _ = fakevlm.answer(images, QUESTION, args.max_new_tokens, args.batch_size)
    ours_rate = len(images) / (time.perf_counter() - start)
    same = sum(a == b for a, b in zip(ours, released))
    print(f"released procedure (1 image per generate): {released_rate:.2f} images/s")
    print(f"fakevlm evaluation (batch {args.batch_size}, KV cache): {ours_rate:.2f} images/s")
    print(f"ratio {ours_rate / released_rate:.2f} (goal >= 3); same answers {same}/{len(images)}")
    if same != len(images):
        raise SystemExit("the two paths answered differently")


if __name__ == "__main__":
    main()
