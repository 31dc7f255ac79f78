"""Training: build (or load) the LLaVA and train it on the validated training split."""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd

from fakevlm.formats import open_image
from fakevlm.model import (
    FakeVLM,
    build_processor,
    build_prompt,
    build_tiny_model,
    load_pretrained,
    train_tokenizer,
)
from fakevlm.training import Example, train

log = logging.getLogger(__name__)


def load_examples(manifest: pd.DataFrame, split: str) -> list[Example]:
    """The rows of `split` with their decoded images, in manifest order."""
    rows = manifest[manifest["split"] == split]
    if rows.empty:
        raise ValueError(f"no rows with split {split!r} in the validated manifest")
    examples = []
    for row in rows.itertuples(index=False):
        # the manifest holds paths, not pixels; validation has already checked every file decodes
        with open_image(row.image_path) as image:
            examples.append(Example(row.id, image.convert("RGB"), row.answer, row.label))
    return examples


def build_model(examples: list[Example], params: dict[str, Any]) -> FakeVLM:
    """The pretrained checkpoint when one is configured, else a tiny LLaVA from config."""
    model_params = params["model"]
    if model_params["pretrained"]:
        model, processor = load_pretrained(model_params["pretrained"], model_params["dtype"])
        return FakeVLM(model, processor)
    # the tokenizer is trained on exactly what it will have to encode: answers and the prompt
    probe = build_processor(train_tokenizer(["x"], 300), model_params)
    corpus = [example.answer for example in examples] + [build_prompt(probe, params["question"])]
    processor = build_processor(train_tokenizer(corpus, model_params["tokenizer_vocab_size"]), model_params)
    return FakeVLM(build_tiny_model(processor, model_params), processor)


def history_as_mlflow_metrics(history: dict[str, list[dict[str, float]]]) -> dict[str, list[dict[str, float]]]:
    """Trainer log history as kedro-mlflow metric series, e.g. `instruction.loss`."""
    metrics: dict[str, list[dict[str, float]]] = {}
    for stage, entries in history.items():
        for entry in entries:
            for key in ("loss", "grad_norm", "learning_rate", "train_loss", "train_runtime"):
                if key in entry:
                    metrics.setdefault(f"{stage}.{key}", []).append(
                        {"step": int(entry["step"]), "value": float(entry[key])}
                    )
    return metrics


def train_fakevlm(
    validated_manifest: pd.DataFrame, params: dict[str, Any]
) -> tuple[FakeVLM, dict[str, Any], dict[str, list[dict[str, float]]]]:
    """Train FakeVLM on the training split; returns the model, its history and MLflow metrics."""
    examples = load_examples(validated_manifest, params["train_split"])
    fakevlm = build_model(examples, params)
    n_params = sum(p.numel() for p in fakevlm.model.parameters())
    log.info("training a %.2f M-parameter LLaVA on %d samples", n_params / 1e6, len(examples))
    history = train(fakevlm.model, fakevlm.processor, examples, params["question"], params["stages"], params["max_length"])
    return fakevlm, {"n_parameters": n_params, "n_samples": len(examples), "stages": history}, history_as_mlflow_metrics(history)
