"""Training: build (or load) the LLaVA and train it on the validated training split."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from fakevlm.baseline import CNNDetector, train_cnn
from fakevlm.launch import launch, write_job
from fakevlm.model import (
    FakeVLM,
    build_processor,
    build_prompt,
    build_tiny_model,
    dct_patch_init,
    load_pretrained,
    train_tokenizer,
)
from fakevlm.training import (Example, claim_output_dirs, load_examples, remove_checkpoints, run_fingerprint,
                              split_rows, train)

log = logging.getLogger(__name__)


def build_model(examples: list[Example], params: dict[str, Any]) -> FakeVLM:
    """The pretrained checkpoint when one is configured, else a small LLaVA-style model from config."""
    model_params = params["model"]
    if model_params["pretrained"]:
        model, processor = load_pretrained(model_params["pretrained"], model_params["dtype"])
        return FakeVLM(model, processor)
    # the tokenizer is trained on exactly what it will have to encode: answers and the prompt
    probe = build_processor(train_tokenizer(["x"], 300), model_params)
    corpus = [example.answer for example in examples] + [build_prompt(probe, params["question"])]
    processor = build_processor(train_tokenizer(corpus, model_params["tokenizer_vocab_size"]), model_params)
    model = build_tiny_model(processor, model_params)
    vision = model_params["vision"]
    if vision["tower"] == "clip" and vision.get("patch_init", "random") == "dct":
        # at most 512 training images, evenly spread over the (category-sorted) rows
        sample = examples[:: max(1, len(examples) // 512)][:512]
        pixels = processor.image_processor(images=[e.rgb_image() for e in sample], return_tensors="pt")["pixel_values"]
        dct_patch_init(model, pixels)
    return FakeVLM(model, processor)


# Wall-clock figures differ on every run: they go to MLflow only, never into the histories DVC hashes.
TIMING_KEYS = ("samples_per_second", "seconds", "train_runtime", "train_samples_per_second", "train_steps_per_second")
MLFLOW_KEYS = ("loss", "grad_norm", "learning_rate", "train_loss", "samples_per_second", "seconds", "train_runtime")


def history_as_mlflow_metrics(history: dict[str, list[dict[str, float]]]) -> dict[str, list[dict[str, float]]]:
    """Log histories as kedro-mlflow metric series, e.g. `instruction.loss`, timings included."""
    metrics: dict[str, list[dict[str, float]]] = {}
    for stage, entries in history.items():
        for entry in entries:
            for key in MLFLOW_KEYS:
                if key in entry:
                    metrics.setdefault(f"{stage}.{key}", []).append(
                        {"step": int(entry["step"]), "value": float(entry[key])}
                    )
    return metrics


def without_timings(entries: list[dict[str, float]]) -> list[dict[str, float]]:
    """A log history without its wall-clock figures: the same for every run of the same inputs."""
    return [{key: value for key, value in entry.items() if key not in TIMING_KEYS} for entry in entries]


def train_fakevlm(
    validated_manifest: pd.DataFrame, params: dict[str, Any]
) -> tuple[FakeVLM, dict[str, Any], dict[str, list[dict[str, float]]]]:
    """Train FakeVLM on the training split; returns the model, its history and MLflow metrics.

    In this process by default; with `launcher.command` set, in the launcher's worker processes.
    """
    rows = split_rows(validated_manifest, params["train_split"])
    examples = load_examples(rows)
    fakevlm = build_model(examples, params)
    fakevlm.question, fakevlm.max_new_tokens = params["question"], params["max_new_tokens"]  # saved with it
    n_params = sum(p.numel() for p in fakevlm.model.parameters())
    log.info("training a %.2f M-parameter LLaVA on %d samples", n_params / 1e6, len(examples))
    stages = params["stages"]
    claim_output_dirs(stages, run_fingerprint(examples, {**params["model"], "lora": params["lora"]}, stages))
    launcher = params["launcher"]
    if launcher["command"]:
        job_root = Path(launcher["job_dir"])
        job_root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="job-", dir=job_root) as job_dir:
            write_job(Path(job_dir), fakevlm, rows, params)
            fakevlm, history, ranks = launch(launcher, Path(job_dir))
    else:
        history = train(fakevlm.model, fakevlm.processor, examples, fakevlm.question, stages, params["max_length"],
                        params["cache_pixels"], params["lora"], params["augment"])
        ranks = [{"rank": 0, "world_size": 1}]
    if not params["keep_checkpoints"]:
        remove_checkpoints(stages)
    summary = {"n_parameters": n_params, "n_samples": len(examples), "ranks": ranks,
               "stages": {stage: without_timings(entries) for stage, entries in history.items()}}
    return fakevlm, summary, history_as_mlflow_metrics(history)


def train_baseline(
    validated_manifest: pd.DataFrame, params: dict[str, Any], train_split: str
) -> tuple[CNNDetector, dict[str, Any], dict[str, list[dict[str, float]]]]:
    """The CNN baseline on the same training split as FakeVLM; returns it, its history and MLflow metrics."""
    examples = load_examples(split_rows(validated_manifest, train_split))
    torch.manual_seed(params["train"]["seed"])
    model = CNNDetector(params["model"])
    model.start_from(params["model"].get("weights"))
    n_params = sum(p.numel() for p in model.parameters())
    log.info("training a %.2f M-parameter CNN baseline on %d samples", n_params / 1e6, len(examples))
    history = train_cnn(model, [e.rgb_image() for e in examples], [e.label for e in examples], params["train"])
    summary = {"n_parameters": n_params, "n_samples": len(examples), "log": without_timings(history)}
    return model, summary, history_as_mlflow_metrics({"train": history})
