"""LOKI and DD-VQA as upstream ships them, from ingestion to metrics with the project's own conf:
every row ends validated or quarantined with its reason, and both benchmarks are scored."""

from __future__ import annotations

import json

import pandas as pd

from fakevlm.baseline import CNNDetector
from fakevlm.model import FakeVLM
from fakevlm.pipelines.annotation.nodes import annotate_images, merge_annotations, report_annotations
from fakevlm.pipelines.evaluation.nodes import evaluate, evaluate_baseline
from fakevlm.pipelines.ingestion.nodes import build_manifest
from fakevlm.pipelines.validation.nodes import check_manifest, enforce_gate, report_validation

from ..conftest import QUESTION, load_params
from ..upstream_formats import write_ddvqa, write_ff, write_loki

FRAMES = ["youtube/c23/images/071/0000.png", "youtube/c23/images/071/0001.png", "Deepfakes/c23/images/071_054/0000.png",
          "NeuralTextures/c23/images/033_097/0000.png", "NeuralTextures/c23/images/033_097/0001.png"]


def test_loki_and_ddvqa_from_ingestion_to_metrics(tmp_path, saved_tiny_model):
    loki = write_loki(tmp_path / "LOKI")
    test_set = write_ddvqa(tmp_path / "DQ_FF++")
    write_ff(tmp_path / "ff", FRAMES)
    sources = [  # the minimal source config: the rest comes from conf/base's format_defaults
        {"name": "loki", "format": "loki", "split": "loki", "images": str(tmp_path / "LOKI"), "annotations": str(loki)},
        {"name": "ddvqa", "format": "ddvqa", "split": "ddvqa", "images": str(tmp_path / "ff"),
         "annotations": str(test_set)}]
    manifest, _, ingested = build_manifest({}, {**load_params("ingestion"), "sources": sources})
    assert ingested["records_in"] == len(manifest) + ingested["quarantined"] == 10 + 5

    params = {**load_params("annotation"), "cache_dir": str(tmp_path / "cache")}
    prompts = load_params("annotation_prompts")
    outputs = annotate_images(manifest, params, prompts, {})
    annotated, annotation_quarantine = merge_annotations(manifest, outputs, params)
    annotation_summary, _, _ = report_annotations(annotated, annotation_quarantine, outputs, params, prompts)
    assert annotation_summary["rows_in"] == len(manifest) == len(annotated) + len(annotation_quarantine)
    # the sources' own explanations are the answers, behind conf's verdict sentence
    explained = manifest.loc[manifest["reference_answer"].notna(), ["id", "reference_answer"]]
    assert len(explained) == 2 + 4  # LOKI's open-ended a.png and e.png; DD-VQA's four explaining answers
    kept = annotated.set_index("id").loc[explained["id"]]
    assert (kept["annotator"] == "source").all() and kept["answer"].tolist() == explained["reference_answer"].tolist()
    assert kept["answer"].str.match(r"This is a (fake|real) image\. \S").all()
    # d.png (fake, no explanation): the grounded annotator finds nothing to say on noise; it keeps
    # its verdict alone and counts for accuracy, not for the explanation metrics
    assert annotation_quarantine.empty and annotation_summary["verdict_only"] == 1
    assert annotated.loc[~annotated["explained"], "id"].tolist() == ["loki/loki/media_data/image/d.png"]

    rules = load_params("validation")
    report, validation_quarantine = check_manifest(annotated, rules)
    validation_summary, _ = report_validation(report, validation_quarantine)
    # every source answer opens with its verdict and both splits are known: only the 9x7 JPEG fails
    assert validation_quarantine[["id", "reason"]].values.tolist() == [
        ["loki/loki/media_data/image/c.JPG", "width 9 is outside 16..16384; height 7 is outside 16..16384"]]
    validated = enforce_gate(annotated, report, validation_summary, {**rules, "max_failed_fraction": 0.2})
    assert validation_summary["records_in"] == len(annotated) == len(validated) + len(validation_quarantine)
    ends = pd.concat([validated["id"], annotation_quarantine["id"], validation_quarantine["id"]])
    assert sorted(ends) == sorted(manifest["id"])  # each row in exactly one place

    benchmarks = {"loki": {"name": "loki", "references": "source"}, "ddvqa": {"name": "ddvqa", "references": "source"}}
    evaluation = {"benchmarks": benchmarks, "max_new_tokens": 8, "batch_size": 4, "whole_image_region": "the whole image",
                  "robustness": {"sweep": None}, "calibration": {"split": None}}
    baseline = CNNDetector({"width": 4, "image_size": 32, "image_mean": [0.5] * 3, "image_std": [0.25] * 3})
    baseline_metrics = evaluate_baseline(baseline, validated, evaluation)
    predictions, metrics, mlflow_metrics = evaluate(FakeVLM.from_pretrained(saved_tiny_model), validated,
                                                    baseline_metrics, evaluation, QUESTION,
                                                    load_params("annotation")["family_cues"])
    assert sorted(json.loads(json.dumps(metrics))) == ["ddvqa", "loki"]  # metrics.json's benchmarks
    for split in ("loki", "ddvqa"):
        rows = validated[validated["split"] == split]
        assert metrics[split]["n"] == metrics[split]["baseline_cnn"]["n"] == len(rows)
        assert metrics[split]["n_explained"] == rows["reference_answer"].notna().sum()
        assert 0.0 <= metrics[split]["rouge_l"] <= 1.0 and f"{split}.accuracy" in mlflow_metrics
    assert (metrics["loki"]["n"], metrics["loki"]["n_explained"], metrics["ddvqa"]["n"]) == (4, 2, 5)
    assert set(metrics["ddvqa"]["per_category"]) == {"deepfake"}
    assert set(metrics["loki"]["per_category"]) == {"animal", "human", "scene"}   # d.png counts for the verdict
