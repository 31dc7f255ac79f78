"""The training loop: HF `Trainer` with a DeepSpeed config, in up to two stages.

Stage 1 (vision warm-up, optional): the vision tower and projector learn the verdict through a
small classification head, so the forensic cue exists before the language model sees it. LLaVA
trains in two stages for the same reason; on a tiny model trained from scratch it is what takes
the verdict from chance to high accuracy within CPU minutes (docs/training-notes.md).
Stage 2 (instruction tuning): the whole LLaVA learns the answer text; loss on answer tokens only.
"""

from __future__ import annotations

import copy
import logging
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from transformers import LlavaForConditionalGeneration, LlavaProcessor, Trainer, TrainingArguments

from fakevlm.model import answer_suffix, build_prompt

log = logging.getLogger(__name__)

IGNORE_INDEX = -100
LABEL_IDS = {"real": 0, "fake": 1}


@dataclass(frozen=True)
class Example:
    """One training sample as the manifest gives it."""

    id: str
    image: Image.Image
    answer: str
    label: str


def encode_example(
    processor: LlavaProcessor, example: Example, question: str, max_length: int
) -> dict[str, torch.Tensor]:
    """Token ids, answer-only labels and pixels for one sample.

    Fails loudly (with the sample id) where LLaVA's own code silently zeroes the labels: an answer
    with no token, or a prompt/answer split that tokenizes differently from the whole text.
    """
    if not example.answer.strip():
        raise ValueError(f"sample {example.id!r}: the answer is empty, there is nothing to learn")
    prompt = build_prompt(processor, question)
    suffix = answer_suffix(example.answer, processor)
    image = example.image.convert("RGB")
    prompt_enc = processor(images=image, text=prompt, return_tensors="pt")
    prompt_ids = prompt_enc["input_ids"][0]
    answer_ids = torch.tensor(processor.tokenizer(suffix, add_special_tokens=False)["input_ids"])
    input_ids = torch.cat([prompt_ids, answer_ids])
    whole = processor(images=image, text=prompt + suffix, return_tensors="pt")["input_ids"][0]
    if not torch.equal(whole, input_ids):
        raise ValueError(
            f"sample {example.id!r}: tokenization mismatch between prompt+answer and the whole text"
        )
    if input_ids.numel() > max_length:
        # truncating would cut the answer (or the image tokens) without anyone noticing
        raise ValueError(f"sample {example.id!r}: {input_ids.numel()} tokens exceed max_length {max_length}")
    labels = torch.cat([torch.full_like(prompt_ids, IGNORE_INDEX), answer_ids])
    return {
        "input_ids": input_ids,
        "labels": labels,
        "pixel_values": prompt_enc["pixel_values"][0],
        "verdict": torch.tensor(LABEL_IDS[example.label]),
    }


def collate_answers(pad_token_id: int):
    """Right-pad a batch of encoded samples for the causal LM loss."""

    def collate(batch: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        length = max(item["input_ids"].numel() for item in batch)
        input_ids = torch.full((len(batch), length), pad_token_id, dtype=torch.long)
        labels = torch.full((len(batch), length), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((len(batch), length), dtype=torch.long)
        for row, item in enumerate(batch):
            n = item["input_ids"].numel()
            input_ids[row, :n] = item["input_ids"]
            labels[row, :n] = item["labels"]
            attention_mask[row, :n] = 1
        pixel_values = torch.stack([item["pixel_values"] for item in batch])
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "labels": labels,
            "pixel_values": pixel_values,
        }

    return collate


def collate_verdicts(batch: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Pixels and real/fake class ids for the vision warm-up."""
    return {
        "pixel_values": torch.stack([item["pixel_values"] for item in batch]),
        "labels": torch.stack([item["verdict"] for item in batch]),
    }


class VisionVerdictClassifier(nn.Module):
    """Copies of LLaVA's vision tower and projector with a linear real/fake head on the pooled
    image tokens.

    The features are taken exactly as LLaVA takes them (same layer, CLS dropped), so what the
    tower and projector learn here is what the language model receives in stage 2. They are
    copies because a DeepSpeed engine leaves gradient hooks on the parameters it trained; shared
    parameters would fire stage 1's hooks during stage 2. `copy_into` hands the weights back.
    """

    def __init__(self, llava: LlavaForConditionalGeneration):
        super().__init__()
        self.vision_tower = copy.deepcopy(llava.model.vision_tower)
        self.projector = copy.deepcopy(llava.model.multi_modal_projector)
        self.feature_layer = llava.config.vision_feature_layer
        self.head = nn.Linear(llava.config.text_config.hidden_size, len(LABEL_IDS))

    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        hidden = self.vision_tower(pixel_values, output_hidden_states=True).hidden_states
        tokens = self.projector(hidden[self.feature_layer][:, 1:])
        logits = self.head(tokens.mean(dim=1))
        out = {"logits": logits}
        if labels is not None:
            out["loss"] = F.cross_entropy(logits, labels)
        return out

    def copy_into(self, llava: LlavaForConditionalGeneration) -> None:
        llava.model.vision_tower.load_state_dict(self.vision_tower.state_dict())
        llava.model.multi_modal_projector.load_state_dict(self.projector.state_dict())


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ensure_distributed_env() -> None:
    """DeepSpeed needs a process group even for one process; launchers set these themselves."""
    if "RANK" in os.environ:
        return
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(free_port()),
        RANK="0",
        LOCAL_RANK="0",
        WORLD_SIZE="1",
    )


def training_arguments(args: dict[str, Any]) -> TrainingArguments:
    """HF TrainingArguments from one stage of `training.stages`, DeepSpeed config included."""
    return TrainingArguments(**args)


def run_trainer(model: nn.Module, dataset: list, collator, args: dict[str, Any]) -> list[dict[str, float]]:
    """Train `model` in place with HF Trainer; returns the logged history."""
    ensure_distributed_env()
    trainer = Trainer(model=model, args=training_arguments(args), train_dataset=dataset, data_collator=collator)
    trainer.train()
    return trainer.state.log_history


def train(
    model: LlavaForConditionalGeneration,
    processor: LlavaProcessor,
    examples: Sequence[Example],
    question: str,
    stages: dict[str, dict[str, Any]],
    max_length: int,
) -> dict[str, list[dict[str, float]]]:
    """Run the configured stages (`vision_warmup`, `instruction`) on `examples`, in place.

    Each stage's dict is HF `TrainingArguments`; a stage with `max_steps: 0` is skipped.
    """
    encoded = [encode_example(processor, example, question, max_length) for example in examples]
    log.info("encoded %d samples, longest %d tokens", len(encoded), max(e["input_ids"].numel() for e in encoded))
    history: dict[str, list[dict[str, float]]] = {}
    warmup = stages.get("vision_warmup")
    if warmup and warmup.get("max_steps", 0) > 0:
        classifier = VisionVerdictClassifier(model)
        history["vision_warmup"] = run_trainer(classifier, encoded, collate_verdicts, warmup)
        classifier.copy_into(model)
    history["instruction"] = run_trainer(
        model, encoded, collate_answers(processor.tokenizer.pad_token_id), stages["instruction"]
    )
    return history
