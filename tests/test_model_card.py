"""The model card: Hugging Face metadata that parses, figures that are the run's."""

from __future__ import annotations

import math

from fakevlm.model_card import CARD_METRICS, front_matter, render_model_card

from .conftest import load_params

METRICS = {
    "fakeclue_test": {"n": 10, "accuracy": 0.9, "verdict_token_accuracy": 0.8, "f1": 0.875, "rouge_l": 0.41234567,
                      "css": math.nan, "per_category": {"doc": {"accuracy": 1.0}}},
    "loki": {"n": 4, "accuracy": 0.5, "verdict_token_accuracy": 0.25, "f1": 0.0, "rouge_l": 0.1, "css": 0.3},
}


def test_card_metadata_parses_and_holds_the_metrics():
    training = load_params("training")
    training["model"]["pretrained"] = "llava-hf/llava-1.5-7b-hf"
    card = render_model_card(METRICS, training, load_params("model_card"))
    metadata = front_matter(card)
    assert metadata["base_model"] == "llava-hf/llava-1.5-7b-hf" and metadata["license"] == "apache-2.0"
    assert metadata["pipeline_tag"] == "image-text-to-text" and metadata["datasets"] == ["lingcco/FakeClue"]
    (index,) = metadata["model-index"]
    found = {result["dataset"]["name"]: {m["name"]: m["value"] for m in result["metrics"]} for result in index["results"]}
    expected = {benchmark: {name: round(scores[key], 4) for key, (_, name) in CARD_METRICS.items()
                            if not math.isnan(scores[key])} for benchmark, scores in METRICS.items()}
    assert found == expected   # NaN (no CSS measured) is left out, not written as .nan
    assert "| fakeclue_test | 10 | 0.900 | 0.800 | 0.875 | 0.412 |  |" in card
    assert "Does the image looks real/fake?" in card and "vllm serve" in card
