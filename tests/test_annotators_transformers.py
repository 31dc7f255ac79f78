"""The `transformers` annotator on a tiny LLaVA checkpoint saved with save_pretrained, and the
annotation pipeline with it beside the grounded annotator."""

from __future__ import annotations

import pandas as pd
import pytest

from fakevlm.annotators import build_annotator, requests_for, run_cached
from fakevlm.annotators.cache import AnnotationCache
from fakevlm.annotators.local_vlm import TransformersAnnotator, checkpoint_fingerprint
from fakevlm.formats.common import open_image
from fakevlm.model import FakeVLM

from .conftest import QUESTION
from .test_annotators_helpers import annotation_params, prompts, tiny_manifest


def vlm_params(tmp_path, checkpoint, **spec):
    params = annotation_params(tmp_path, annotators=["grounded", "fakevlm_local"])
    params["available"]["fakevlm_local"].update(checkpoint=str(checkpoint), max_new_tokens=12, **spec)
    return params


def answers_of(tmp_path, checkpoint, rows, cache="cache", **spec):
    params = vlm_params(tmp_path, checkpoint, **spec)
    annotator = build_annotator("fakevlm_local", params, prompts(), None)
    out = run_cached(annotator, requests_for(rows, annotator, prompts(), params["verdict"]),
                     AnnotationCache(tmp_path / cache))
    return annotator, out


def test_answers_match_the_model_s_own_generation_batched_or_not(tmp_path, saved_tiny_model):
    rows = tiny_manifest(tmp_path / "images", n=6)
    _, batched = answers_of(tmp_path, saved_tiny_model, rows, batch_size=4)
    _, single = answers_of(tmp_path, saved_tiny_model, rows, cache="other", batch_size=1)
    assert batched["error"].isna().all()
    assert batched["answer"].tolist() == single["answer"].tolist()
    reference = FakeVLM.from_pretrained(saved_tiny_model).generate(
        [open_image(p).convert("RGB") for p in rows["image_path"]], QUESTION, max_new_tokens=12, batch_size=1)
    assert batched["answer"].tolist() == reference  # the same chat template as training


def test_a_rerun_asks_the_model_nothing(tmp_path, saved_tiny_model, monkeypatch):
    rows = tiny_manifest(tmp_path / "images", n=3)
    _, first = answers_of(tmp_path, saved_tiny_model, rows)
    monkeypatch.setattr(TransformersAnnotator, "generate", lambda *args: pytest.fail("asked the model again"))
    _, again = answers_of(tmp_path, saved_tiny_model, rows)
    pd.testing.assert_frame_equal(again, first)


def test_new_weights_in_the_same_folder_are_another_model(tmp_path, saved_tiny_model):
    before = checkpoint_fingerprint(saved_tiny_model)
    weights = bytearray((saved_tiny_model / "model.safetensors").read_bytes())
    weights[len(weights) // 2] ^= 1      # one bit in the middle: same size, same first and last bytes
    (saved_tiny_model / "model.safetensors").write_bytes(bytes(weights))
    assert checkpoint_fingerprint(saved_tiny_model) != before


def test_a_missing_checkpoint_says_which(tmp_path):
    with pytest.raises(FileNotFoundError, match="fakevlm_local.*nowhere"):
        build_annotator("fakevlm_local", vlm_params(tmp_path, tmp_path / "nowhere"), prompts(), None)


def test_pipeline_merges_grounded_and_transformers_answers(tmp_path, saved_tiny_model):
    from .pipelines.test_annotation import run_pipeline

    manifest = tiny_manifest(tmp_path / "images", n=14)
    result = run_pipeline(manifest, vlm_params(tmp_path, saved_tiny_model))
    outputs, annotated, summary = result["annotator_outputs"], result["annotated_manifest"], result["annotation_summary"]
    assert sorted(outputs["annotator"].unique()) == ["fakevlm_local", "grounded"] and len(outputs) == 28
    assert summary["rows_in"] == 14 == summary["annotated"] + summary["quarantined"]
    assert summary["agreement"]["annotators"] == 2 and "fakevlm_local~grounded" in summary["agreement"]["verdict_agreement"]
    assert annotated["prompt_versions"].str.fullmatch(r"grounded:[0-9a-f]{16};fakevlm_local:[0-9a-f]{16}").all()
    assert all(a.startswith(f"This is a {lab} image.") for a, lab in zip(annotated["answer"], annotated["label"]))
    assert len(annotated) > 0
