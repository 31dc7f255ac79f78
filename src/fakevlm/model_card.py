"""The model card: a Hugging Face `README.md` (YAML metadata with `model-index`, then prose) written
from the run's own figures, so that uploading a model folder to the hub gives a proper page."""

from __future__ import annotations

import math
from typing import Any

import yaml

# metrics.json key -> (model-index metric type, display name), in the card's order
CARD_METRICS = {
    "accuracy": ("accuracy", "Accuracy (verdict parsed from the answer)"),
    "verdict_token_accuracy": ("accuracy", "Accuracy (verdict tokens' probabilities, as FakeVLM's paper)"),
    "f1": ("f1", "F1 (fake = positive)"),
    "rouge_l": ("rouge", "ROUGE-L of the explanation"),
    "css": ("cosine_similarity", "CSS (sentence-embedding cosine of the explanation)"),
}


def card_results(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """model-index results: one per benchmark, its metrics that have a value (NaN left out)."""
    results = []
    for benchmark, scores in sorted(metrics.items()):
        values = [{"type": kind, "name": name, "value": round(float(scores[key]), 4)}
                  for key, (kind, name) in CARD_METRICS.items()
                  if key in scores and not math.isnan(float(scores[key]))]
        results.append({
            "task": {"type": "image-text-to-text", "name": "Synthetic image detection with explanations"},
            "dataset": {"name": benchmark, "type": benchmark},
            "metrics": values,
        })
    return results


def render_model_card(metrics: dict[str, Any], training: dict[str, Any], card: dict[str, Any]) -> str:
    """README.md for the model `training` describes, with the benchmarks' figures from `metrics`."""
    base_model = training["model"]["pretrained"]
    metadata = {
        "license": card["license"],
        "library_name": "transformers",
        "pipeline_tag": "image-text-to-text",
        "tags": card["tags"],
        "datasets": card["datasets"],
        "language": card["language"],
        **({"base_model": base_model} if base_model else {}),
        "model-index": [{"name": card["name"], "results": card_results(metrics)}],
    }
    stage = training["stages"]["instruction"]
    recipe = {key: stage.get(key) for key in ("learning_rate", "num_train_epochs", "max_steps",
                                              "per_device_train_batch_size", "lr_scheduler_type", "deepspeed")}
    rows = "\n".join(
        f"| {benchmark} | {scores.get('n', '')} | "
        + " | ".join(_figure(scores.get(key)) for key in CARD_METRICS) + " |"
        for benchmark, scores in sorted(metrics.items()))
    header = " | ".join(name for _, name in CARD_METRICS.values())
    question = training["question"]
    return f"""---
{yaml.safe_dump(metadata, sort_keys=False, allow_unicode=True)}---

# {card['name']}

A LLaVA-style vision-language model that says whether an image is real or AI-generated / edited
and explains the artifacts it sees, trained by fakevlm (a reproduction of FakeVLM, NeurIPS 2025).

## Intended use

Detecting synthetic images and explaining the verdict, for people reviewing images: research,
moderation triage, forensics support. Ask it FakeClue's question, "{question}"; it answers "This
is a fake image." or "This is a real image." and then the clues.

## Training

Base model: {base_model or 'none (built small from random init, see the training parameters)'}.
Data: the training split of the run's validated manifest (FakeClue format). Recipe (instruction
stage): {', '.join(f'{key} {value}' for key, value in recipe.items() if value is not None)};
loss on the answer tokens only; max length {training['max_length']} tokens.

## Evaluation

| benchmark | n | {header} |
|---|---|{'---|' * len(CARD_METRICS)}
{rows}

## Limitations

The verdict generalises only as far as the artifacts seen in training; new generators, heavy
recompression and resizing lower it. Explanations can name artifacts that are not there. Not a
sole basis for decisions about people.

## How to run

fakevlm: `fakevlm detect --model THIS_FOLDER image.png` (or `fakevlm serve --model THIS_FOLDER`).

transformers:

```python
from transformers import AutoModelForImageTextToText, AutoProcessor
from PIL import Image
model = AutoModelForImageTextToText.from_pretrained("THIS_FOLDER")
processor = AutoProcessor.from_pretrained("THIS_FOLDER")
messages = [{{"role": "user", "content": [{{"type": "image"}}, {{"type": "text", "text": "{question}"}}]}}]
prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
inputs = processor(images=Image.open("image.png").convert("RGB"), text=prompt, return_tensors="pt")
print(processor.decode(model.generate(**inputs, max_new_tokens=256, do_sample=False)[0], skip_special_tokens=True))
```

vLLM (LLaVA models): `vllm serve THIS_FOLDER`, then an OpenAI chat request with one `image_url`
part and the question as text.
"""


def _figure(value: Any) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{float(value):.3f}"


def front_matter(text: str) -> dict[str, Any]:
    """The YAML metadata of a model card, as the hub reads it."""
    if not text.startswith("---\n"):
        raise ValueError("a model card starts with its YAML metadata between --- lines")
    return yaml.safe_load(text.split("---\n", 2)[1])
