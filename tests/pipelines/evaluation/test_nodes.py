import json

import pandas as pd
import pytest

from fakevlm.model import FakeVLM
from fakevlm.baseline import CNNDetector
from fakevlm.degradations import degrade
from fakevlm.metrics import flatten_metrics, parse_verdict, rouge_l_scores
from fakevlm.reports import render_evaluation_html
from fakevlm.pipelines.evaluation.nodes import (
    benchmark_splits,
    compute_metrics,
    evaluate,
    evaluate_baseline,
    explanation_faithfulness,
    per_generator,
    predict,
    report_evaluation,
)

from ...conftest import QUESTION, load_params


def test_evaluate_generates_scores_and_flattens(saved_tiny_model, labelled_images, tmp_path):
    rows = []
    for i, image, label, answer in labelled_images[:6]:
        path = tmp_path / f"{i}.png"
        image.save(path)
        rows.append({"id": i, "image_path": str(path), "category": "animal" if int(i[-1]) % 3 else "doc",
                     "label": label, "artifact_family": None, "artifact_region": None, "answer": answer, "explained": True, "split": "test"})
    rows.append(dict(rows[0], id="train-only", split="train"))
    rows += [dict(row, id=f"val-{row['id']}", split="val") for row in rows[:4]]   # the calibration split
    manifest = pd.DataFrame(rows)
    model = FakeVLM.from_pretrained(saved_tiny_model)
    params = {"benchmarks": {"test": "mini", "train": None}, "max_new_tokens": 12, "batch_size": 4,
              "whole_image_region": "the whole image",
              "robustness": {"sweep": "small", "sweeps": {"small": {"jpeg": [30], "blur": [2.0]}}},
              "calibration": {"split": "val"}, "calibration_bins": 10, "verdict_max_new_tokens": 8}

    baseline = CNNDetector({"width": 4, "image_size": 32, "image_mean": [0.5] * 3, "image_std": [0.25] * 3})
    baseline_metrics = evaluate_baseline(baseline, manifest, params)
    predictions, metrics, mlflow_metrics = evaluate(model, manifest, baseline_metrics, params, QUESTION,
                                                        load_params("annotation")["family_cues"])

    assert list(predictions["id"]) == [r["id"] for r in rows[:6]]  # the test split only, in order
    assert predictions["prediction"].tolist() == model.generate(
        [image for _, image, *_ in labelled_images[:6]], QUESTION, 12
    )
    mini = metrics["mini"]
    assert mini["n"] == 6 and set(mini["per_category"]) == {"animal", "doc"}
    parsed = predictions["predicted_label"]
    assert mini["accuracy"] == pytest.approx((parsed == predictions["label"]).mean())
    assert mlflow_metrics["mini.accuracy"] == {"value": mini["accuracy"], "step": 0}
    assert "mini.per_category.doc.rouge_l" in mlflow_metrics
    named = predictions["prediction"].str.contains(r"\b(?:real|fake)\b")
    assert predictions["fake_probability"][named].between(0, 1).all()
    assert predictions["fake_probability"][~named].isna().all()
    assert {"roc_auc", "average_precision", "ece"} <= set(mini)
    # the baseline is scored on the same rows, beside FakeVLM
    probabilities = baseline.fake_probability([image for _, image, *_ in labelled_images[:6]])
    baseline_accuracy = sum((p >= 0.5) == (r["label"] == "fake") for p, r in zip(probabilities, rows)) / 6
    assert mini["baseline_cnn"]["accuracy"] == pytest.approx(baseline_accuracy)
    assert mini["baseline_cnn"]["n"] == 6 and set(mini["baseline_cnn"]["per_category"]) == {"animal", "doc"}
    assert "mini.baseline_cnn.accuracy" in mlflow_metrics
    confusion = mini["confusion"]
    assert sum(map(sum, confusion["counts"])) == 6 and confusion["predicted"] == ["real", "fake", "unparsed"]

    # calibration: a temperature fitted on the val rows; the ranking stays, only the confidence moves
    calibrated = mini["calibrated"]
    assert calibrated["temperature"] > 0 and calibrated["roc_auc"] == pytest.approx(mini["roc_auc"], nan_ok=True)
    assert predictions["fake_probability_calibrated"].isna().equals(predictions["fake_probability"].isna())

    # the robustness sweep: the same six images degraded, the verdict read again
    swept = mini["robustness"]
    assert sorted(swept) == ["blur_2", "jpeg_30"] and swept["blur_2"]["n"] == 6
    blurred = [degrade(image, "blur", 2.0) for _, image, *_ in labelled_images[:6]]
    answers = model.generate(blurred, QUESTION, 8)
    assert swept["blur_2"]["accuracy"] == pytest.approx(
        sum(parse_verdict(a) == r["label"] for a, r in zip(answers, rows)) / 6)
    assert "mini.robustness.jpeg_30.accuracy" in mlflow_metrics

    page, confusion_plot, reliability = report_evaluation(predictions, metrics,
                                                          {"calibration_bins": 10, "report_samples": 4})
    # per group (here the reals and the fakes of no known generator) its worst mistake, then right
    # answers, 4 in all; and 3 figures
    wrong = predictions["predicted_label"] != predictions["label"]
    shown = sum(min(1, w) + min(4 - min(1, w), r) for w, r in
                zip(wrong.groupby(predictions["label"]).sum(), (~wrong).groupby(predictions["label"]).sum()))
    assert page.count("data:image/png;base64,") == shown + 3 and page.count('class="verdict"') == shown
    assert "Robustness" in page and "<td>blur</td><td>2.0</td>" in page and "alt=\"robustness\"" in page
    assert "CNN baseline" in page and "reliability_diagram" in page and "per_category_accuracy" in page
    assert confusion_plot[["actual", "predicted"]].shape == (6, 2)
    assert reliability["count"].sum() == predictions["fake_probability"].notna().sum()
    json.dumps(metrics)


def test_compute_metrics_per_benchmark():
    predictions = pd.DataFrame(
        {
            "benchmark": ["a", "a", "b", "b"],
            "prediction": ["This is a fake image. x", "This is a real image. y", "This is a real image. y", "nonsense"],
            "reference": ["This is a fake image. x", "This is a fake image. x", "This is a real image. y", "This is a real image. y"],
            "label": ["fake", "fake", "real", "real"],
            "category": ["doc", "doc", "scene", "scene"],
            "artifact_family": ["splice", "checkerboard", None, None],
            "predicted_label": ["fake", "real", "real", None],
            "fake_probability": [0.9, 0.4, 0.2, float("nan")],
        }
    )
    metrics = compute_metrics(predictions)
    assert metrics["a"]["accuracy"] == 0.5 and metrics["b"]["accuracy"] == 0.5
    assert metrics["b"]["n_unparsed"] == 1
    assert metrics["b"]["n_without_probability"] == 1
    assert metrics["a"]["per_generator"]["splice"]["fake_accuracy"] == 1.0
    assert metrics["a"]["per_generator"]["checkerboard"]["fake_accuracy"] == 0.0
    assert metrics["b"]["per_generator"] == {}  # no fakes: no generator to score
    assert metrics["a"]["per_category"]["doc"]["ece"] == pytest.approx(metrics["a"]["ece"])


def test_faithfulness_reads_the_caught_fakes_of_known_families_and_the_reals_judged_real():
    rows = pd.DataFrame({
        "label": ["fake", "fake", "fake", "fake", "real", "real"],
        "predicted_label": ["fake", "fake", "real", "fake", "real", "real"],
        "artifact_family": ["checkerboard", "splice", "checkerboard", "FLUX", None, None],
        "artifact_region": ["the upper left", "a patch in the centre", "the upper left", "the whole image", None, None],
        "prediction": ["This is a fake image. The upper left carries a checkerboard pattern.",
                       "This is a fake image. The whole image is over-smoothed.",
                       "This is a real image. No checkerboard pattern.",       # missed: not read
                       "This is a fake image. A checkerboard pattern.",         # family unknown: not read
                       "This is a real image. The grain is even.",
                       "This is a real image. The sky is over-smoothed."],
    })
    cues = load_params("annotation")["family_cues"]
    result = explanation_faithfulness(rows, cues, "the whole image")
    assert (result["n"], result["family_named"], result["wrong_family_named"]) == (2, 0.5, 0.5)
    assert (result["n_placed"], result["place_named"]) == (2, 0.5)
    assert result["real_names_artifact"] == 0.5
    assert set(result["per_family"]) == {"checkerboard", "splice"}
    assert explanation_faithfulness(rows[rows["label"] == "real"], cues, "the whole image") is None

    scored = rows.assign(benchmark="b", category="doc", reference=rows["prediction"], fake_probability=0.5)
    page = render_evaluation_html({"b": {**compute_metrics(scored)["b"], "faithfulness": result}}, {}, [])
    assert "Explanation faithfulness" in page and "<td>splice</td><td>1</td><td>0.000</td><td>1.000</td>" in page


def test_per_generator_scores_each_generators_fakes_against_all_real_images():
    predictions = pd.DataFrame({
        "label": ["real", "real", "real", "fake", "fake", "fake", "fake"],
        "artifact_family": [None, None, None, "realesrgan_x4plus", "realesrgan_x4plus", "dcgan_face", None],
        "predicted_label": ["real", "real", "fake", "fake", "fake", "real", None],
        "fake_probability": [0.1, 0.2, 0.7, 0.9, 0.8, 0.3, float("nan")],
    })
    generators = per_generator(predictions)
    assert sorted(generators) == ["dcgan_face", "realesrgan_x4plus", "unknown"]
    esrgan, dcgan = generators["realesrgan_x4plus"], generators["dcgan_face"]
    assert (esrgan["n"], esrgan["n_fake"], dcgan["n"], dcgan["n_fake"]) == (5, 2, 4, 1)
    # real recall is the split's, each generator's fake recall its own
    assert esrgan["real_accuracy"] == dcgan["real_accuracy"] == pytest.approx(2 / 3)
    assert (esrgan["fake_accuracy"], dcgan["fake_accuracy"]) == (1.0, 0.0)
    assert esrgan["accuracy"] == pytest.approx(4 / 5) and dcgan["accuracy"] == pytest.approx(2 / 4)
    assert esrgan["roc_auc"] == 1.0 and esrgan["average_precision"] == 1.0
    assert dcgan["roc_auc"] == pytest.approx(2 / 3)   # ranked above one real of three
    assert generators["unknown"]["n_unparsed"] == 1 and generators["unknown"]["n_without_probability"] == 1


def test_flatten_metrics_keeps_numbers_only():
    assert flatten_metrics({"a": {"b": 1, "c": "text", "d": {"e": 0.5}}, "f": True}) == {"a.b": 1.0, "a.d.e": 0.5}


def test_flattened_names_are_names_mlflow_accepts(mlflow_store):
    import mlflow

    flat = flatten_metrics({"aspect_coverage": {"deepfake": {"lighting, skin tone (and) image processing": 0.5}}})
    assert flat == {"aspect_coverage.deepfake.lighting_ skin tone _and_ image processing": 0.5}
    with mlflow.start_run():
        mlflow.log_metrics(flat)   # MLflow refuses ',' '(' ')' in a metric name


def test_loki_benchmark_scores_explanations_where_loki_gives_them(saved_tiny_model, labelled_images, tmp_path):
    """A benchmark with `references: source`: verdicts on every image, ROUGE-L/CSS on the explained ones."""
    params = {"benchmarks": {"loki": {"name": "loki", "references": "source"}, "test": "mini", "train": None},
              "max_new_tokens": 12, "batch_size": 4}
    assert benchmark_splits(params) == [("loki", "loki"), ("test", "mini")]
    rows = []
    for (i, image, label, answer), reference in zip(labelled_images[:3], ["This is a fake image. The fur melts.", None, None]):
        image.save(tmp_path / f"{i}.png")
        rows.append({"id": i, "image_path": str(tmp_path / f"{i}.png"), "category": "animal", "label": label,
                     "artifact_family": None, "artifact_region": None, "answer": answer, "explained": True,
                     "reference_answer": reference,
                     "split": "loki"})
    model = FakeVLM.from_pretrained(saved_tiny_model)
    predictions = predict(model, pd.DataFrame(rows), {**params, "benchmarks": {"loki": params["benchmarks"]["loki"]}},
                          QUESTION)
    assert predictions["reference"].tolist()[0] == "This is a fake image. The fur melts."
    assert predictions["reference"].isna().tolist() == [False, True, True]
    loki = compute_metrics(predictions)["loki"]
    assert (loki["n"], loki["n_explained"]) == (3, 1)
    assert loki["rouge_l"] == pytest.approx(rouge_l_scores(predictions["prediction"][:1].tolist(),
                                                           ["This is a fake image. The fur melts."])[0])
    assert loki["per_category"]["animal"]["n_explained"] == 1


def test_compute_metrics_text_scores_only_rows_with_a_reference():
    predictions = pd.DataFrame(
        {
            "benchmark": ["loki"] * 4,
            "prediction": ["This is a fake image. The fur melts.", "This is a real image.", "This is a real image.",
                           "This is a fake image. The sky is too smooth."],
            "reference": ["This is a fake image. The fur melts.", None, None, "This is a fake image. Too smooth a sky."],
            "label": ["fake", "fake", "real", "fake"],
            "category": ["animal", "animal", "scene", "scene"],
            "artifact_family": [None] * 4,
            "predicted_label": ["fake", "real", "real", "fake"],
            "fake_probability": [0.9, 0.3, 0.2, 0.8],
        }
    )
    loki = compute_metrics(predictions)["loki"]
    assert (loki["n"], loki["n_explained"], loki["accuracy"]) == (4, 2, 0.75)
    expected = rouge_l_scores(predictions["prediction"][[0, 3]].tolist(), predictions["reference"][[0, 3]].tolist())
    assert loki["rouge_l"] == pytest.approx(sum(expected) / 2) and expected[0] == 1.0
    assert loki["per_category"]["animal"]["rouge_l"] == 1.0 and loki["per_category"]["animal"]["accuracy"] == 0.5
    assert loki["per_category"]["scene"]["n_explained"] == 1 and 0 < loki["css"] <= 1
