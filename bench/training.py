"""Throughput of the pipeline's training loop (HF Trainer + DeepSpeed ZeRO-2) vs a bare PyTorch loop.

    .venv/bin/python bench/training.py [--steps N] [--batch B] [--samples S] [--threads T]
                                       [--logging-steps L] [--warmup-steps W] [--repeats R]

Trains the tiny LLaVA of `conf/base/parameters_training.yml` (`training.model`) on S synthetic
64x64 images for N steps of batch B, two ways, each run from the same seeded initialisation, with
T torch threads for both (OMP_NUM_THREADS is set too, or accelerate would pick its own count):

- pipeline: `fakevlm.training.run_trainer` with the `training.stages.instruction` arguments
  (DeepSpeed `conf/base/deepspeed/zero2.json`, cosine schedule, gradient clipping, logging every
  L steps). Its figure is the Trainer's own `train_runtime`: from after the DeepSpeed engine and
  optimizer are built to the end of the last step, so it covers batching, forward, backward,
  ZeRO-2 gradient handling, clipping, optimizer and scheduler steps, callbacks and logging.
- bare: the same encoded samples, collator, batch size and shuffling through a plain DataLoader,
  `torch.optim.AdamW` with the same learning rate and weight decay, `loss.backward()` and
  `optimizer.step()`, no schedule and no clipping. Its figure times the step loop only.

Both figures include each model's first step (the optimizer allocates its state there); a
W-step bare run on a throwaway model before either pays the process's one-time costs (thread
pool, kernel selection) so that neither measurement pays them. Model building, tokenizer
training, encoding and DeepSpeed start-up (including its one-off JIT build of a CPU extension,
~45 s the first time, cached after) are outside both; the pipeline's figure including start-up
is printed too, for information. Each way runs R times, alternating which goes first; the best
run of each counts (the machines are shared, and interference only ever slows a run down).
Prints samples/s of every run, the best of each and their ratio (goal >= 0.90).
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from PIL import Image
from torch.utils.data import DataLoader

from fakevlm.model import build_processor, build_prompt, build_tiny_model, train_tokenizer
from fakevlm.training import Example, collate_answers, encode_example, run_trainer

ROOT = Path(__file__).resolve().parents[1]
ANSWERS = {
    "real": ["This is a real image. The texture varies naturally.",
             "This is a real image. Lighting and shadows agree across the scene."],
    "fake": ["This is a fake image. The whole image carries a clear checkerboard pattern.",
             "This is a fake image. Edges are unnaturally smooth and the noise repeats."],
}


def make_examples(count: int, size: int) -> list[Example]:
    """`count` random-noise RGB images, half labelled fake, with short verdict answers."""
    rng = np.random.default_rng(0)
    examples = []
    for index in range(count):
        label = "fake" if index % 2 else "real"
        image = Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
        examples.append(Example(f"img{index:05d}", image, ANSWERS[label][index // 2 % 2], label))
    return examples


def bare(model, encoded: list, collator, batch: int, steps: int, lr: float, weight_decay: float) -> float:
    """Seconds for `steps` plain AdamW steps over the encoded samples."""
    generator = torch.Generator().manual_seed(0)
    loader = DataLoader(encoded, batch_size=batch, shuffle=True, collate_fn=collator, generator=generator)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    model.train()
    done = 0
    start = time.perf_counter()
    while done < steps:
        for inputs in loader:
            loss = model(**inputs).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            done += 1
            if done == steps:
                break
    return time.perf_counter() - start


def pipeline(model, encoded: list, collator, stage: dict) -> tuple[float, float]:
    """The Trainer's `train_runtime` for one `run_trainer` call, and the call's own seconds."""
    with tempfile.TemporaryDirectory() as scratch:
        start = time.perf_counter()
        history = run_trainer(model, encoded, collator, {**stage, "output_dir": scratch})
        return history[-1]["train_runtime"], time.perf_counter() - start


def main() -> None:
    """Parse arguments, build model and samples, train both ways, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--logging-steps", type=int, help="default: the instruction stage's own")
    parser.add_argument("--warmup-steps", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    params = OmegaConf.to_container(OmegaConf.load(ROOT / "conf/base/parameters_training.yml"), resolve=True)
    params = params["training"]
    model_params, stage = params["model"], params["stages"]["instruction"]
    examples = make_examples(args.samples, model_params["image_size"])
    # the tokenizer is trained as the pipeline's build_model trains it: on the answers and the prompt
    probe = build_processor(train_tokenizer(["x"], 300), model_params)
    corpus = [e.answer for e in examples] + [build_prompt(probe, params["question"])]
    processor = build_processor(train_tokenizer(corpus, model_params["tokenizer_vocab_size"]), model_params)
    encoded = [encode_example(processor, e, params["question"], params["max_length"]) for e in examples]
    collator = collate_answers(processor.tokenizer.pad_token_id)

    # accelerate sets torch's threads to the physical core count unless OMP_NUM_THREADS is set
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    torch.set_num_threads(args.threads)
    lr, decay = stage["learning_rate"], stage["weight_decay"]
    fresh = lambda: build_tiny_model(processor, model_params)  # noqa: E731  seeded: same weights every time
    bare(fresh(), encoded, collator, args.batch, args.warmup_steps, lr, decay)
    stage.update(max_steps=args.steps, per_device_train_batch_size=args.batch, save_strategy="no",
                 deepspeed=str(ROOT / stage["deepspeed"]), logging_steps=args.logging_steps or stage["logging_steps"])

    samples = args.steps * args.batch
    load_before = os.getloadavg()[0]
    best = {"pipeline": float("inf"), "startup": float("inf"), "bare": float("inf")}
    for repeat in range(args.repeats):
        # alternating the order spreads drifts in the machine's load over both
        for which in ("pipeline", "bare") if repeat % 2 == 0 else ("bare", "pipeline"):
            if which == "pipeline":
                took, with_startup = pipeline(fresh(), encoded, collator, stage)
                best["startup"] = min(best["startup"], with_startup)
            else:
                took = bare(fresh(), encoded, collator, args.batch, args.steps, lr, decay)
            best[which] = min(best[which], took)
            print(f"repeat {repeat + 1} {which}: {samples / took:.1f} samples/s", flush=True)

    print(f"steps: {args.steps}, batch: {args.batch}, samples: {args.samples}, threads: {torch.get_num_threads()}, "
          f"logging every {stage['logging_steps']} steps, best of {args.repeats}")
    print(f"bare PyTorch loop:        {samples / best['bare']:.1f} samples/s")
    print(f"pipeline (Trainer + DS):  {samples / best['pipeline']:.1f} samples/s "
          f"({samples / best['startup']:.1f} including engine start-up)")
    print(f"ratio (pipeline / bare):  {best['bare'] / best['pipeline']:.2f}  (goal >= 0.90)")
    # a load above the core count means other work shared the cores: the figures are not to be trusted
    print(f"load average before / after: {load_before:.1f} / {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")

if __name__ == "__main__":
    main()
