"""The training loop: HF `Trainer` with a DeepSpeed config, in up to two stages.

Stage 1 (vision warm-up, optional): the vision tower and projector learn the verdict through a
small classification head, so the forensic cue exists before the language model sees it. LLaVA
trains in two stages for the same reason; on a tiny model trained from scratch it is what takes
the verdict from chance to high accuracy within CPU minutes (docs/training-notes.md). Where the
data records which artifact family made each fake, the head tells the families apart: the image
tokens then carry which artifact is there, and the explanation names it.
Stage 2 (instruction tuning): the whole LLaVA learns the answer text; loss on answer tokens only.

Each stage checkpoints every `save_steps` into its `output_dir` and resumes from the last
checkpoint there, so a killed run continues where it stopped (see `claim_output_dirs`).
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import shutil
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image
from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn
from torch.utils.data import Dataset
from transformers import LlavaProcessor, PreTrainedModel, Trainer, TrainerCallback, TrainingArguments

from fakevlm.degradations import augment as augment_image
from fakevlm.formats import open_image
from fakevlm.model import answer_suffix, build_prompt, image_tokens, keep_running_statistics

log = logging.getLogger(__name__)

IGNORE_INDEX = -100
LABEL_CLASSES = ("real", "fake")


@dataclass(frozen=True)
class Example:
    """One training sample as the manifest gives it."""

    id: str
    image: Image.Image | str   # decoded, or the file to decode when the sample is drawn
    answer: str
    label: str
    family: str | None = None  # the artifact family that made a fake, where the data records it

    def warmup_class(self, by: str) -> str:
        """The vision warm-up's class: the label, or (`by: family`) the family of a fake that has one."""
        return self.family if by == "family" and self.label == "fake" and self.family else self.label

    def rgb_image(self) -> Image.Image:
        if isinstance(self.image, Image.Image):
            return self.image.convert("RGB")
        # validation has already checked that every file decodes
        with open_image(self.image) as image:
            return image.convert("RGB")


def split_rows(manifest: pd.DataFrame, split: str) -> pd.DataFrame:
    """The manifest rows of one split; an error if there are none."""
    rows = manifest[manifest["split"] == split]
    if rows.empty:
        raise ValueError(f"no rows with split {split!r} in the manifest")
    return rows


# what load_examples reads of a manifest row; artifact_family only where the data has it
EXAMPLE_COLUMNS = ("id", "image_path", "answer", "label", "artifact_family")


def load_examples(rows: pd.DataFrame) -> list[Example]:
    """Manifest rows (EXAMPLE_COLUMNS) as examples, in row order; images stay on disk."""
    examples = []
    for row in rows.itertuples(index=False):
        family = getattr(row, "artifact_family", None)
        examples.append(Example(row.id, row.image_path, row.answer, row.label, family if pd.notna(family) else None))
    return examples


def warmup_classes(examples: Sequence[Example], by: str) -> list[str]:
    """The warm-up's classes, "real" first: real/fake, or real and each fake family (`by: family`)."""
    if by not in ("label", "family"):
        raise ValueError(f"vision_warmup.classes must be 'label' or 'family', not {by!r}")
    if by == "label":
        return list(LABEL_CLASSES)
    return ["real", *sorted({e.warmup_class(by) for e in examples if e.label == "fake"})]


def expanded_prompt_ids(processor: LlavaProcessor, prompt: str) -> torch.Tensor:
    """The prompt's token ids with the image placeholder expanded to the image tokens.

    The same for every sample: the image processor resizes and crops every image to one size.
    """
    blank = Image.new("RGB", (8, 8))
    return processor(images=blank, text=prompt, return_tensors="pt")["input_ids"][0]


def encode_answer(
    processor: LlavaProcessor, example: Example, prompt: str, prompt_ids: torch.Tensor, max_length: int
) -> dict[str, torch.Tensor]:
    """Token ids and answer-only labels for one sample.

    Fails loudly (with the sample id) where LLaVA's own code silently zeroes the labels: an answer
    with no token, or a prompt/answer split that tokenizes differently from the whole text.
    """
    if not example.answer.strip():
        raise ValueError(f"sample {example.id!r}: the answer is empty, there is nothing to learn")
    suffix = answer_suffix(example.answer, processor)
    answer_ids = processor.tokenizer(suffix, add_special_tokens=False)["input_ids"]
    # compared before the image placeholder is expanded: expansion cannot change the boundary
    if processor.tokenizer(prompt + suffix)["input_ids"] != processor.tokenizer(prompt)["input_ids"] + answer_ids:
        raise ValueError(
            f"sample {example.id!r}: tokenization mismatch between prompt+answer and the whole text"
        )
    input_ids = torch.cat([prompt_ids, torch.tensor(answer_ids, dtype=prompt_ids.dtype)])
    if input_ids.numel() > max_length:
        # truncating would cut the answer (or the image tokens) without anyone noticing
        raise ValueError(f"sample {example.id!r}: {input_ids.numel()} tokens exceed max_length {max_length}")
    labels = torch.cat([torch.full_like(prompt_ids, IGNORE_INDEX), input_ids[prompt_ids.numel():]])
    return {"input_ids": input_ids, "labels": labels}


class TrainingSamples(Dataset):
    """Encoded samples for the Trainer: token ids checked for every sample before the first step.

    Pixels are decoded up front with `cache_pixels` (small sets: decoding at each draw costs a
    third of a CPU step at 64 px) or each time a sample is drawn, in the DataLoader's workers
    (FakeClue: 104k images at 336 px would need 140 GB as tensors). With `augment` enabled each
    draw is degraded anew (`degradations.augment`, from torch's seeded generator): the decoded
    images are cached then, not their pixels.
    """

    def __init__(self, processor: LlavaProcessor, examples: Sequence[Example], question: str, max_length: int,
                 cache_pixels: bool = True, augment: dict[str, Any] | None = None, warmup_by: str = "label"):
        self.processor = processor
        self.augment = augment if augment and augment["enabled"] else None
        self.examples = [replace(e, image=e.rgb_image()) for e in examples] \
            if cache_pixels and self.augment else list(examples)
        self.warmup_classes = warmup_classes(self.examples, warmup_by)
        self.warmup_ids = [self.warmup_classes.index(e.warmup_class(warmup_by)) for e in self.examples]
        prompt = build_prompt(processor, question)
        prompt_ids = expanded_prompt_ids(processor, prompt)
        self.tokens = [encode_answer(processor, e, prompt, prompt_ids, max_length) for e in self.examples]
        self.pixels = [self.pixel_values(e) for e in self.examples] if cache_pixels and not self.augment else None

    def pixel_values(self, example: Example) -> torch.Tensor:
        image = example.rgb_image()
        if self.augment:
            image = augment_image(image, self.augment, torch.rand(4).tolist())
        return self.processor.image_processor(images=image, return_tensors="pt")["pixel_values"][0]

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        example = self.examples[index]
        pixels = self.pixels[index] if self.pixels is not None else self.pixel_values(example)
        return {**self.tokens[index], "pixel_values": pixels, "warmup_class": torch.tensor(self.warmup_ids[index])}


def encode_example(
    processor: LlavaProcessor, example: Example, question: str, max_length: int
) -> dict[str, torch.Tensor]:
    """One sample as the Trainer receives it: token ids, answer-only labels, pixels, warm-up class."""
    return TrainingSamples(processor, [example], question, max_length)[0]


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


def collate_warmup(batch: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Pixels and class ids for the vision warm-up."""
    return {
        "pixel_values": torch.stack([item["pixel_values"] for item in batch]),
        "labels": torch.stack([item["warmup_class"] for item in batch]),
    }


class VisionWarmupClassifier(nn.Module):
    """Copies of the model's vision tower and projector with a linear head on the mean- and
    max-pooled image tokens, over real/fake or over real and each fake family (`warmup_classes`).

    The features are taken exactly as the model takes them (`model.image_tokens`), so what the
    tower and projector learn here is what the language model receives in stage 2. They are
    copies because a DeepSpeed engine leaves gradient hooks on the parameters it trained; shared
    parameters would fire stage 1's hooks during stage 2. `copy_into` hands the weights back.
    """

    def __init__(self, llava: PreTrainedModel, n_classes: int = len(LABEL_CLASSES)):
        super().__init__()
        self.vision_tower = copy.deepcopy(llava.model.vision_tower)
        self.projector = copy.deepcopy(llava.model.multi_modal_projector)
        self.config = llava.config
        # mean and max over the image tokens: a splice or an edited quadrant marks a few tokens only
        self.head = nn.Linear(2 * llava.config.text_config.hidden_size, n_classes)

    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        tokens = self.projector(image_tokens(self.config, self.vision_tower, pixel_values))
        logits = self.head(torch.cat([tokens.mean(dim=1), tokens.amax(dim=1)], dim=-1))
        out = {"logits": logits}
        if labels is not None:
            out["loss"] = F.cross_entropy(logits, labels)
        return out

    def copy_into(self, llava: PreTrainedModel) -> None:
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


def zero_stage(args: dict[str, Any]) -> int:
    """The ZeRO stage of a training stage's DeepSpeed config; 0 without DeepSpeed."""
    if not args.get("deepspeed"):
        return 0
    return json.loads(Path(args["deepspeed"]).read_text())["zero_optimization"]["stage"]


def unshard(engine, model: nn.Module) -> None:
    """Give `model` its full weights back after ZeRO-3 training, on every rank.

    ZeRO-3 leaves each rank a shard of every weight, behind hooks that gather them during a
    forward pass; saving, copying or training the model again needs plain tensors. The weights
    are gathered one module at a time (a whole-model gather would hold every weight twice at its
    peak: 14 GB more per rank at 7B), the engine's hooks removed, and each parameter replaced by a
    plain one (tied parameters stay tied).
    """
    import deepspeed

    full: dict[int, torch.Tensor] = {}
    for module in model.modules():
        own = [p for p in module.parameters(recurse=False) if id(p) not in full]
        if own:
            with deepspeed.zero.GatheredParameters(own, modifier_rank=None):
                full.update({id(p): p.detach().clone() for p in own})
    engine.destroy()
    plain: dict[int, nn.Parameter] = {}
    for module in model.modules():
        for name, param in list(module._parameters.items()):
            if param is not None:
                if id(param) not in plain:
                    plain[id(param)] = nn.Parameter(full[id(param)], requires_grad=param.requires_grad)
                module._parameters[name] = plain[id(param)]


class ThroughputCallback(TrainerCallback):
    """Adds samples/s since the previous logging step to each entry of the log history."""

    def on_train_begin(self, args, state, control, **kwargs):
        self.last = (state.global_step, time.perf_counter())

    def on_log(self, args, state, control, logs=None, **kwargs):
        step, then = self.last
        now = time.perf_counter()
        if state.global_step > step and "loss" in state.log_history[-1]:
            samples = (state.global_step - step) * args.train_batch_size * args.gradient_accumulation_steps
            state.log_history[-1]["samples_per_second"] = samples * args.world_size / (now - then)
            self.last = (state.global_step, now)


HISTORY_FILE = "log_history.json"   # a finished stage's history, beside its checkpoints
FINGERPRINT_FILE = "fingerprint.txt"


def resumable_checkpoint(args: dict[str, Any]) -> str | None:
    """The last complete checkpoint in the stage's output_dir, if the stage saves any.

    Trainer writes trainer_state.json last, so a checkpoint without it was cut short by a kill.
    """
    output_dir = Path(args["output_dir"])
    if args.get("save_strategy") == "no" or not output_dir.is_dir():
        return None
    complete = [path for path in output_dir.glob("checkpoint-*")
                if path.name.split("-")[-1].isdigit() and (path / "trainer_state.json").is_file()]
    return str(max(complete, key=lambda path: int(path.name.split("-")[-1]))) if complete else None


class StageTrainer(Trainer):
    """HF Trainer whose optimizer can give the vision tower a learning rate of its own
    (LLaVA-NeXT's `mm_vision_tower_lr`): a tower that stage 1 has already taught the verdict can
    move more slowly than the language model that learns to read it."""

    def __init__(self, *args, vision_tower_lr: float | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.vision_tower_lr = vision_tower_lr

    def create_optimizer(self, model=None) -> torch.optim.Optimizer:
        if self.vision_tower_lr is None or self.optimizer is not None:
            return super().create_optimizer(model)
        model = self.model if model is None else model
        decay = set(self.get_decay_parameter_names(model))
        groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
        for name, parameter in model.named_parameters():
            if parameter.requires_grad:
                groups.setdefault(("vision_tower." in name, name in decay), []).append(parameter)
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, model)
        self.optimizer = optimizer_cls(
            [{"params": params, "weight_decay": self.args.weight_decay if decays else 0.0}
             | ({"lr": self.vision_tower_lr} if vision else {})
             for (vision, decays), params in sorted(groups.items())],
            **optimizer_kwargs,
        )
        return self.optimizer


def run_trainer(model: nn.Module, dataset: Dataset, collator, args: dict[str, Any]) -> list[dict[str, float]]:
    """Train `model` in place with HF Trainer, resuming from the stage's last checkpoint if any;
    returns the logged history. `args` are TrainingArguments plus `vision_tower_lr` (StageTrainer)."""
    ensure_distributed_env()
    args = dict(args)
    vision_tower_lr = args.pop("vision_tower_lr", None)
    trainer = StageTrainer(model=model, args=TrainingArguments(**args), train_dataset=dataset, data_collator=collator,
                           callbacks=[ThroughputCallback()], vision_tower_lr=vision_tower_lr)
    checkpoint = resumable_checkpoint(args)
    if checkpoint:
        log.info("resuming from %s", checkpoint)
    trainer.train(resume_from_checkpoint=checkpoint)
    if zero_stage(args) == 3:
        unshard(trainer.model_wrapped, model)
    if trainer.is_world_process_zero():
        Path(args["output_dir"]).mkdir(parents=True, exist_ok=True)
        (Path(args["output_dir"]) / HISTORY_FILE).write_text(json.dumps(trainer.state.log_history))
    return trainer.state.log_history


def run_fingerprint(examples: Sequence[Example], model_config: dict[str, Any], stages: dict[str, Any]) -> str:
    """What a checkpoint must have been trained on to be resumed: samples, model and stages."""
    samples = [(e.id, e.answer, e.label, e.family) for e in examples]
    text = json.dumps({"samples": samples, "model": model_config, "stages": stages}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def claim_output_dirs(stages: dict[str, dict[str, Any]], fingerprint: str) -> None:
    """Keep each stage's checkpoints only if they belong to this run (same fingerprint).

    A checkpoint left by a run on other data or settings would otherwise be resumed silently.
    """
    for name, args in stages.items():
        output_dir = Path(args["output_dir"])
        marker = output_dir / FINGERPRINT_FILE
        if output_dir.is_dir() and (not marker.is_file() or marker.read_text() != fingerprint):
            log.info("stage %s: %s holds another run's checkpoints; starting afresh", name, output_dir)
            shutil.rmtree(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        marker.write_text(fingerprint)


def remove_checkpoints(stages: dict[str, dict[str, Any]]) -> None:
    """After a finished run: checkpoints only serve to resume, and at 7B they are large."""
    for args in stages.values():
        shutil.rmtree(args["output_dir"], ignore_errors=True)


def with_lora(model: PreTrainedModel, lora: dict[str, Any]) -> PeftModel:
    """`model` with LoRA adapters on the language model's projections, for the instruction stage.

    The vision tower stays frozen and the projector trains in full, as in LLaVA's own LoRA
    recipe. peft wraps `model` in place; `merge_and_unload` after training folds the adapters
    back into its weights, so what is saved is a plain LLaVA.
    """
    config = LoraConfig(r=lora["r"], lora_alpha=lora["alpha"], lora_dropout=lora["dropout"],
                        target_modules=lora["target_modules"], modules_to_save=lora["modules_to_save"],
                        bias="none")
    peft_model = get_peft_model(model, config)
    # gradient checkpointing recomputes from the embeddings, which LoRA leaves frozen
    peft_model.enable_input_require_grads()
    return peft_model


def train(
    model: PreTrainedModel,
    processor: LlavaProcessor,
    examples: Sequence[Example],
    question: str,
    stages: dict[str, dict[str, Any]],
    max_length: int,
    cache_pixels: bool = True,
    lora: dict[str, Any] | None = None,
    augment: dict[str, Any] | None = None,
) -> dict[str, list[dict[str, float]]]:
    """Run the configured stages (`vision_warmup`, `instruction`) on `examples`, in place.

    Each stage's dict is HF `TrainingArguments`; a stage with `max_steps: 0` is skipped, and so
    is the warm-up when the instruction stage resumes (its checkpoint holds the warmed-up tower).
    With `lora.enabled`, the instruction stage trains LoRA adapters (`with_lora`) instead of every
    weight. `augment`: the training-time degradations (TrainingSamples). The warm-up's `classes`
    (not a TrainingArguments field): `label` (real/fake) or `family` (`warmup_classes`).
    """
    keep_running_statistics(model)
    warmup = dict(stages.get("vision_warmup") or {})
    warmup_by = warmup.pop("classes", "label")
    encoded = TrainingSamples(processor, examples, question, max_length, cache_pixels, augment, warmup_by)
    log.info("encoded %d samples, longest %d tokens", len(encoded), max(t["input_ids"].numel() for t in encoded.tokens))
    history: dict[str, list[dict[str, float]]] = {}
    use_lora = bool(lora and lora["enabled"])
    if warmup.get("max_steps", 0) > 0:
        # a LoRA checkpoint holds the adapters and the projector, not the frozen warmed-up tower:
        # then the warm-up runs again (resuming from its own checkpoint)
        if resumable_checkpoint(stages["instruction"]) and not use_lora:
            history["vision_warmup"] = json.loads((Path(warmup["output_dir"]) / HISTORY_FILE).read_text())
        else:
            classifier = VisionWarmupClassifier(model, len(encoded.warmup_classes))
            history["vision_warmup"] = run_trainer(classifier, encoded, collate_warmup, warmup)
            classifier.copy_into(model)
    instruction_model = with_lora(model, lora) if use_lora else model
    history["instruction"] = run_trainer(
        instruction_model, encoded, collate_answers(processor.tokenizer.pad_token_id), stages["instruction"]
    )
    if use_lora:
        instruction_model.disable_input_require_grads()
        instruction_model.merge_and_unload()
    return history
