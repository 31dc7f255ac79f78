"""The annotation pipeline: merge, filters, quarantine, report, and the pipeline over an in-memory
catalog (rows in = annotated + quarantined; the same inputs give the same bytes)."""

from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd
import pytest
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from fakevlm.explanations import clues, generic_mask, merge
from fakevlm.pipelines.annotation import create_pipeline
from fakevlm.pipelines.annotation.nodes import merge_annotations
from fakevlm.pipelines.annotation.report import quality_summary

from ..test_annotators_helpers import annotation_params, prompts, tiny_manifest

MERGE = {"match_similarity": 0.7, "min_support_share": 0.6, "max_clues": 4}


def unit(*values):
    vector = np.asarray(values, dtype=float)
    return vector / np.linalg.norm(vector)


def test_clues_drop_the_verdict_sentence_only():
    assert clues("This is a fake image. The eyes differ. The fur repeats!") == ["The eyes differ.", "The fur repeats!"]
    assert clues("The eyes differ. It is fake.") == ["The eyes differ.", "It is fake."]


def test_a_single_answer_is_kept_as_it_stands():
    answer = "This is a fake image. The eyes differ in size. The fur repeats every 2 pixels."
    assert merge("This is a fake image.", [answer], {}, MERGE).answer == answer


def test_merge_keeps_backed_clues_once_best_backed_first():
    embeddings = {"A1.": unit(1, 0, 0), "A2.": unit(0, 1, 0), "B1.": unit(0.95, 0.1, 0), "C1.": unit(0, 0, 1)}
    answers = ["This is a fake image. A2. A1.", "This is a fake image. B1.", "This is a fake image. C1."]
    majority = merge("This is a fake image.", answers, embeddings, {**MERGE, "min_support_share": 0.6})
    assert majority.answer == "This is a fake image. A1."  # A1 and B1 match: 2 of 3; B1 repeats A1
    assert majority.agreement == pytest.approx(2 / 4)
    union = merge("This is a fake image.", answers, embeddings, {**MERGE, "min_support_share": 0.3, "max_clues": 3})
    assert union.answer == "This is a fake image. A1. A2. C1."


def test_no_backed_clue_leaves_no_answer():
    embeddings = {"A1.": unit(1, 0), "B1.": unit(0, 1)}
    merged = merge("This is a real image.", ["This is a real image. A1.", "B1."], embeddings, {**MERGE, "min_support_share": 1.0})
    assert merged.answer is None


def test_generic_flags_copies_shared_by_many_answers_only():
    specific = [f"This is a real image. The grain in cell {i} is {w} and the edge {v} is sharp."
                for i, (w, v) in enumerate(zip(["even", "fine", "soft", "coarse", "dense"] * 4, "abcdefghijklmnopqrst"))]
    boiler = ["This is a real image. The image looks natural with consistent lighting."] * 10
    mask = generic_mask(specific + boiler, similarity=0.95, max_share=0.2, min_count=5)
    assert not mask[:20].any() and mask[20:].all()
    assert not generic_mask(specific + boiler, similarity=0.95, max_share=0.2, min_count=10).any()  # 9 others


def outputs_for(manifest, annotator, answers, errors=None):
    errors = errors or {}
    return pd.DataFrame({"id": manifest["id"], "annotator": annotator, "model": "m", "prompt_hash": "h",
                         "answer": [answers.get(i) for i in manifest["id"]], "error": [errors.get(i) for i in manifest["id"]]})


@pytest.fixture
def five_rows(tmp_path):
    return tiny_manifest(tmp_path / "images", n=5)


def test_filters_send_rows_to_quarantine_with_their_reason(tmp_path, five_rows):
    params = annotation_params(tmp_path)
    params["filters"]["generic"]["max_share"] = 1.0  # not under test here
    answers = {
        "img000": "This is a real image. The grain is even from the upper left to the lower right, as a camera makes it.",
        "img001": "This is a real image. The grain is even across the frame and nothing repeats anywhere here.",  # a fake
        "img002": "This is a real image. Fine.",
        "img004": "This is a real image.",
    }
    outputs = outputs_for(five_rows, "grounded", answers, errors={"img003": "APITimeoutError: timed out"})
    annotated, quarantine = merge_annotations(five_rows, outputs, params)
    assert annotated["id"].tolist() == ["img000", "img004"]
    assert annotated.at[0, "answer"] == answers["img000"] and annotated.at[0, "prompt_versions"] == "grounded:h"
    # no clue at all: the image keeps its verdict, unexplained, and still counts for the verdict
    assert annotated["explained"].tolist() == [True, False]
    assert annotated.at[1, "answer"] == params["verdict"]["real"]
    reasons = dict(zip(quarantine["id"], quarantine["reason"]))
    assert reasons["img001"].startswith("contradicts the label 'fake'")
    assert reasons["img002"].startswith("too short: 6 words")
    assert reasons["img003"] == "annotator failed: grounded: APITimeoutError: timed out"
    assert sorted(reasons) == ["img001", "img002", "img003"]
    assert len(annotated) + len(quarantine) == len(five_rows)
    # the report counts the contradiction although its row went to quarantine: 1 of 4 answers
    summary = quality_summary(annotated, quarantine, outputs, params, prompts())
    assert summary["annotators"]["grounded"]["contradiction_rate"] == pytest.approx(0.25)
    assert summary["verdict_only"] == 1


def test_source_answers_are_kept_as_they_stand(tmp_path, five_rows):
    params = annotation_params(tmp_path)
    five_rows.loc[0, "reference_answer"] = "This is a real image. Short."
    outputs = outputs_for(five_rows.iloc[1:], "grounded", {i: f"This is a {lab} image. The grain of {i} is odd in the centre, near the edge of the frame."
                                                        for i, lab in zip(five_rows["id"], five_rows["label"])})
    annotated, quarantine = merge_annotations(five_rows, outputs, params)
    assert annotated.set_index("id").at["img000", "answer"] == "This is a real image. Short."
    assert annotated.set_index("id").at["img000", "annotator"] == "source"
    assert len(annotated) == 5 and quarantine.empty


def test_a_source_answer_that_contradicts_its_label_is_quarantined(tmp_path, five_rows):
    params = annotation_params(tmp_path)
    five_rows.loc[1, "reference_answer"] = "This is a real image. The fur is natural."   # img001 is fake
    outputs = outputs_for(five_rows.drop(index=1), "grounded", {i: f"This is a {lab} image. The grain of {i} is odd in the centre, near the edge of the frame."
                                                                for i, lab in zip(five_rows["id"], five_rows["label"])})
    annotated, quarantine = merge_annotations(five_rows, outputs, params)
    assert quarantine["id"].tolist() == ["img001"]
    assert quarantine.at[0, "reason"] == "source answer contradicts the label 'fake'"
    assert len(annotated) == 4


def test_a_contradicting_annotator_is_dropped_and_the_other_kept(tmp_path, five_rows):
    params = annotation_params(tmp_path, annotators=["grounded", "other"])
    rows = five_rows.iloc[:1]
    grounded = outputs_for(rows, "grounded", {"img000": "This is a real image. The grain is even across the whole frame, from the upper left to the lower right."})
    other = outputs_for(rows, "other", {"img000": "This is a fake image. The eyes are odd."})
    annotated, quarantine = merge_annotations(rows, pd.concat([grounded, other]), params)
    assert annotated.at[0, "annotator"] == "grounded" and quarantine.empty
    assert annotated.at[0, "prompt_versions"] == "grounded:h;other:h"


class KeptDataset(MemoryDataset):
    """A MemoryDataset the runner cannot release, so the test reads intermediate outputs too."""

    def _release(self) -> None:
        pass


OUTPUTS = ("annotator_outputs", "annotated_manifest", "annotation_quarantine", "annotation_summary",
           "annotation_report_html", "annotation_mlflow_metrics")


def run_pipeline(manifest, params):
    catalog = DataCatalog({
        "manifest": MemoryDataset(manifest), "params:annotation": MemoryDataset(params),
        "params:annotation_prompts": MemoryDataset(prompts()), "annotator_credentials": MemoryDataset({}),
        **{name: KeptDataset() for name in OUTPUTS},
    })  # fmt: skip
    SequentialRunner().run(create_pipeline(), catalog)
    return {name: catalog[name].load() for name in OUTPUTS}


def parquet_bytes(frame):
    buffer = io.BytesIO()
    frame.to_parquet(buffer)
    return buffer.getvalue()


def test_pipeline_writes_merged_answers_a_quarantine_and_a_report_deterministically(tmp_path):
    manifest = tiny_manifest(tmp_path / "images", n=28)
    params = annotation_params(tmp_path)
    first = run_pipeline(manifest, params)
    annotated, quarantine, summary = first["annotated_manifest"], first["annotation_quarantine"], first["annotation_summary"]
    assert summary["rows_in"] == len(manifest) == len(annotated) + len(quarantine) == summary["annotated"] + summary["quarantined"]
    assert len(annotated) >= 20
    assert (annotated["annotator"] == "grounded").all()
    assert annotated["prompt_versions"].str.fullmatch(r"grounded:[0-9a-f]{16}").all()
    assert all(a.startswith(f"This is a {lab} image.") for a, lab in zip(annotated["answer"], annotated["label"]))
    assert set(summary["aspect_coverage"]) == {"animal", "human", "object", "scene", "satellite", "doc", "deepfake"}
    assert summary["annotators"]["grounded"]["requests"] == 28 and summary["annotators"]["grounded"]["contradiction_rate"] == 0
    assert "<h1>Annotation report</h1>" in first["annotation_report_html"]
    assert first["annotation_mlflow_metrics"]["genericity_rate"] == {"value": summary["genericity_rate"], "step": 0}
    second = run_pipeline(manifest, params)  # from the cache
    assert parquet_bytes(second["annotated_manifest"]) == parquet_bytes(annotated)
    pd.testing.assert_frame_equal(second["annotator_outputs"], first["annotator_outputs"])


def test_every_row_without_an_answer_is_quarantined_not_lost(tmp_path):
    manifest = tiny_manifest(tmp_path / "images", n=6)
    manifest.loc[3, "image_path"] = str(tmp_path / "gone.png")
    result = run_pipeline(manifest, annotation_params(tmp_path))
    quarantine = result["annotation_quarantine"]
    assert "img003" in quarantine["id"].tolist()
    assert quarantine.set_index("id").at["img003", "reason"].startswith("annotator failed: grounded: FileNotFoundError")
    assert len(result["annotated_manifest"]) + len(quarantine) == 6
    assert math.isclose(result["annotation_summary"]["genericity_rate"], 0.0)


def test_a_trusted_annotator_s_clues_need_no_backing_and_others_do():
    embeddings = {"G1.": unit(1, 0, 0), "G2.": unit(0, 1, 0), "M1.": unit(0.1, 0.99, 0), "M2.": unit(0, 0, 1)}
    answers = ["This is a fake image. G1. G2.", "This is a fake image. M1. M2."]
    merged = merge("This is a fake image.", answers, embeddings, MERGE, trusted=[True, False])
    assert merged.answer == "This is a fake image. G2. G1."  # G2 backed by M1 comes first; M2 unbacked
    assert merge("This is a fake image.", answers, embeddings, MERGE).answer == "This is a fake image. G2."


def test_a_run_where_every_row_is_quarantined_still_reports(tmp_path):
    manifest = tiny_manifest(tmp_path / "images", n=3)
    manifest["image_path"] = str(tmp_path / "gone.png")
    result = run_pipeline(manifest, annotation_params(tmp_path))
    summary = result["annotation_summary"]
    assert result["annotated_manifest"].empty and summary["quarantined"] == 3 == summary["rows_in"]
    assert summary["words"]["mean"] is None and summary["annotators"]["grounded"]["failed"] == 3


def test_source_answers_cost_no_annotator_call(tmp_path):
    manifest = tiny_manifest(tmp_path / "images", n=4)
    manifest["reference_answer"] = [f"This is a {label} image. As the source says." for label in manifest["label"]]
    result = run_pipeline(manifest, annotation_params(tmp_path))
    assert result["annotator_outputs"].empty and not (tmp_path / "cache").exists()
    assert (result["annotated_manifest"]["annotator"] == "source").all()
    assert result["annotation_summary"]["kept_from_source"] == 4
