"""FakeVLM's training recipe on LLaVA-1.5-7B's architecture, measured: what a GPU hour buys.

    .venv/bin/python bench/gpu_recipe.py                  # on a GPU: the 7B, conf/gpu's recipe
    .venv/bin/python bench/gpu_recipe.py --toy            # on a CPU: the same steps at toy width

The model is built from LLaVA-1.5-7B's config (fakevlm.llava15's layout at the 7B's sizes) with
random weights: nothing is downloaded. The training step is the pipeline's own
(`fakevlm.training.run_trainer` with conf/gpu's `training.stages.instruction` arguments: ZeRO-2,
bf16, gradient checkpointing, 32 samples per GPU) on synthetic samples of FakeVLM's shape (576
image tokens + prompt + answer = `--tokens`, 1024 by default), for `--steps` steps after one
warm-up step; then batched greedy generation. Prints samples/s, tokens/s and peak memory, and from
them the hours FakeClue's 2 epochs (104,343 images each) take on 8 such GPUs (one process here:
the per-GPU rate times 8, ZeRO-2's gradient all-reduce not counted).
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time

import numpy as np
import torch
import yaml
from omegaconf import OmegaConf
from PIL import Image
from torch.utils.data import Dataset

from fakevlm.llava15 import build, corpus_from
from fakevlm.model import FakeVLM
from fakevlm.training import IGNORE_INDEX, collate_answers, run_trainer

FAKECLUE_TRAIN = 104_343
EPOCHS, GPUS = 2, 8
# LLaVA-1.5-7B (llava-hf/llava-1.5-7b-hf's config.json): CLIP ViT-L/14-336 and Vicuna-7B
SIZES_7B = {"vision": {"hidden_size": 1024, "intermediate_size": 4096, "num_layers": 24, "num_heads": 16,
                       "projection_dim": 768},
            "text": {"hidden_size": 4096, "intermediate_size": 11008, "num_layers": 32, "num_heads": 32}}
SIZES_TOY = {"vision": {"hidden_size": 32, "intermediate_size": 64, "num_layers": 2, "num_heads": 2,
                        "projection_dim": 32},
             "text": {"hidden_size": 32, "intermediate_size": 64, "num_layers": 2, "num_heads": 2}}


class SyntheticSamples(Dataset):
    """Samples of FakeVLM's shape: <s>, 576 image tokens, then text ids; loss on the last `answer` ids."""

    def __init__(self, count: int, tokens: int, image_token: int, image_tokens: int, answer: int, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.items = []
        for _ in range(count):
            ids = torch.from_numpy(rng.integers(300, 32000, tokens)).long()
            ids[0], ids[1 : 1 + image_tokens] = 1, image_token
            labels = torch.full_like(ids, IGNORE_INDEX)
            labels[-answer:] = ids[-answer:]
            pixels = torch.from_numpy(rng.standard_normal((3, 336, 336)).astype(np.float32))
            self.items.append({"input_ids": ids, "labels": labels, "pixel_values": pixels})

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.items[index]


def peak_memory_gb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20   # kB on Linux: the process's peak RSS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--toy", action="store_true", help="toy width (CPU), float32, batch 2")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=1024)
    parser.add_argument("--generate", type=int, default=64, help="new tokens per image in the generation test")
    args = parser.parse_args()
    gpu = OmegaConf.to_container(OmegaConf.merge(*(OmegaConf.load(f"conf/{env}/parameters_training.yml")
                                                   for env in ("base", "gpu"))), resolve=True)["training"]
    smoke = yaml.safe_load(open("conf/smoke/gpu_smoke.yml"))["llava15"]
    sizes = SIZES_TOY if args.toy else SIZES_7B
    fakevlm = build({**smoke, **sizes}, corpus_from(smoke["corpus_files"], smoke["question"]))
    model = fakevlm.model if args.toy else fakevlm.model.to(torch.bfloat16)
    n_params = sum(p.numel() for p in model.parameters())
    stage = {k: v for k, v in gpu["stages"]["instruction"].items() if k not in ("num_train_epochs", "save_steps")}
    batch = 2 if args.toy else stage["per_device_train_batch_size"]
    stage.update(max_steps=args.steps + 1, save_strategy="no", logging_steps=1, report_to="none",
                 per_device_train_batch_size=batch, dataloader_num_workers=0, remove_unused_columns=False,
                 disable_tqdm=True)
    if args.toy:
        stage.update(bf16=False, tf32=False, use_cpu=True)
    dataset = SyntheticSamples(batch * (args.steps + 1), args.tokens, model.config.image_token_index,
                               model.config.image_seq_length, answer=args.tokens // 4)
    with tempfile.TemporaryDirectory() as output_dir:
        history = run_trainer(model, dataset, collate_answers(fakevlm.processor.tokenizer.pad_token_id),
                              {**stage, "output_dir": output_dir})
    # the first step (allocation, kernel choice) is left out: the steps after it, by their log times
    per_step = [entry["samples_per_second"] for entry in history if "samples_per_second" in entry][1:]
    samples_per_s = float(np.median(per_step)) if per_step else float("nan")
    tokens_per_s = samples_per_s * args.tokens

    images = [Image.fromarray(np.random.default_rng(i).integers(0, 256, (336, 336, 3), dtype=np.uint8))
              for i in range(batch)]
    generator = FakeVLM(model.eval(), fakevlm.processor)
    start = time.perf_counter()
    generator.answer(images, smoke["question"], args.generate, batch)
    generated_per_s = batch * args.generate / (time.perf_counter() - start)

    hours = EPOCHS * FAKECLUE_TRAIN / (samples_per_s * GPUS) / 3600
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    print(f"{'toy width' if args.toy else 'LLaVA-1.5-7B'}: {n_params / 1e9:.3f} B parameters on {device}")
    print(f"training (ZeRO-2, {'float32' if args.toy else 'bf16'}, gradient checkpointing, batch {batch} x "
          f"{args.tokens} tokens): {samples_per_s:.2f} samples/s, {tokens_per_s:.0f} tokens/s")
    print(f"batched generation ({batch} images, {args.generate} new tokens each): {generated_per_s:.1f} tokens/s")
    print(f"peak memory: {peak_memory_gb():.1f} GiB ({'GPU' if torch.cuda.is_available() else 'process RSS'})")
    print(f"FakeClue, {EPOCHS} epochs x {FAKECLUE_TRAIN} images on {GPUS} such devices: {hours:.1f} hours"
          + (" (toy width: not a GPU figure)" if args.toy else ""))


if __name__ == "__main__":
    main()
