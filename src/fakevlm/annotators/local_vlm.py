"""The `transformers` annotator: any local vision-language checkpoint folder (LLaVA-style,
Qwen2-VL-style) through AutoProcessor + AutoModelForImageTextToText, batched, greedy, offline."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from fakevlm.annotators import Done, Request
from fakevlm.formats.common import UNREADABLE_IMAGE, open_image

_BLOCK_BYTES = 8 << 20   # read weight files in 8 MiB blocks


def checkpoint_fingerprint(folder: str | Path) -> str:
    """What identifies a checkpoint: its JSON files and every byte of its weight files.

    Whole files: a fine-tune (LoRA merged, a frozen tower) can leave the first and last tensors
    of a shard unchanged, and a sampled hash would then serve the old model's cached answers.
    Reading a 7B checkpoint once per run costs seconds.
    """
    folder = Path(folder)
    digest = hashlib.sha256()
    for path in sorted(folder.iterdir()):
        if path.suffix == ".json":
            digest.update(path.name.encode() + path.read_bytes())
        elif path.suffix in {".safetensors", ".bin"}:
            digest.update(path.name.encode())
            with path.open("rb") as handle:
                for block in iter(lambda: handle.read(_BLOCK_BYTES), b""):
                    digest.update(block)
    return digest.hexdigest()[:16]


class TransformersAnnotator:
    def __init__(self, name: str, spec: dict[str, Any], prompts: dict[str, Any]):
        self.name = name
        self.spec = spec
        self.template = spec["template"]
        folder = spec["checkpoint"]
        if not Path(folder).is_dir():
            raise FileNotFoundError(f"annotator {name!r}: checkpoint folder {folder} not found")
        self.model = f"{Path(folder).name}-{checkpoint_fingerprint(folder)}|n={spec['max_new_tokens']}"
        self.processor = self.vlm = None  # loaded on the first uncached request: a rerun needs no model

    def load(self) -> None:
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        folder, remote = self.spec["checkpoint"], self.spec["trust_remote_code"]
        self.processor = AutoProcessor.from_pretrained(folder, trust_remote_code=remote, local_files_only=True)
        # batched generation continues each row from its own last token
        self.processor.tokenizer.padding_side = "left"
        self.vlm = AutoModelForImageTextToText.from_pretrained(
            folder, dtype=getattr(torch, self.spec["dtype"]), trust_remote_code=remote, local_files_only=True
        ).eval()

    def annotate(self, requests: Sequence[Request], done: Done) -> dict[str, str]:
        """Greedy answers, batched per prompt (same category and label)."""
        if self.vlm is None:
            self.load()
        errors: dict[str, str] = {}
        by_prompt: dict[str, list[Request]] = defaultdict(list)
        for request in requests:
            by_prompt[request.prompt].append(request)
        size = self.spec["batch_size"]
        for prompt, group in by_prompt.items():
            text = self.processor.apply_chat_template(
                [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}],
                add_generation_prompt=True,
            )
            for start in range(0, len(group), size):
                # decoded one batch at a time: a whole data set of pictures does not fit in memory
                batch = []
                for request in group[start : start + size]:
                    try:
                        batch.append((request, open_image(request.image_path).convert("RGB")))
                    except UNREADABLE_IMAGE as error:  # missing, undecodable or a bomb: that record, not the run
                        errors[request.id] = f"{type(error).__name__}: {error}"
                if batch:
                    for (request, _), answer in zip(batch, self.generate(text, [image for _, image in batch])):
                        done(request, answer)
        return errors

    def generate(self, text: str, images: Sequence[Image.Image]) -> list[str]:
        import torch

        inputs = self.processor(images=list(images), text=[text] * len(images), return_tensors="pt", padding=True)
        with torch.no_grad():
            output = self.vlm.generate(**inputs, max_new_tokens=self.spec["max_new_tokens"], do_sample=False)
        new_tokens = output[:, inputs["input_ids"].shape[1] :]
        return [answer.strip() for answer in self.processor.batch_decode(new_tokens, skip_special_tokens=True)]
