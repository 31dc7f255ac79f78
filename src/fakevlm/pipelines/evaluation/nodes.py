"""Evaluation: generate answers on each benchmark split and score them."""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix

from fakevlm.baseline import LABELS, CNNDetector
from fakevlm.metrics import (
    CLASSES,
    UNPARSED,
    apply_temperature,
    faithfulness,
    fit_temperature,
    flatten_metrics,
    named_families,
    parse_verdict,
    probability_scores,
    rouge_l_scores,
    score,
    score_verdicts,
)
from fakevlm.degradations import CLEAN, degrade
from fakevlm.formats import open_image
from fakevlm.model import FakeVLM
from fakevlm.reports import figure_data_uri, render_evaluation_html
from fakevlm.serving import encode_image
from fakevlm.training import load_examples, split_rows

log = logging.getLogger(__name__)


def benchmark_splits(params: dict[str, Any]) -> list[tuple[str, str]]:
    """(manifest split, benchmark name) of every configured benchmark, sorted."""
    return [(split, _benchmark(value)["name"]) for split, value in sorted(params["benchmarks"].items())
            if value is not None]


def _benchmark(value: str | dict[str, Any]) -> dict[str, Any]:
    """A benchmark entry as {name, references}: a bare name scores against the manifest's `answer`."""
    return {"references": "answer", **value} if isinstance(value, dict) else {"name": value, "references": "answer"}


def _references(rows: pd.DataFrame, params: dict[str, Any], split: str) -> pd.Series:
    """Each row's reference text: the annotated `answer` where it explains (not the verdict alone), or
    with `references: source` the source's own explanation (`reference_answer`, LOKI's open-ended
    descriptions); missing where there is none, so the row counts for the verdict only."""
    if _benchmark(params["benchmarks"][split])["references"] == "source":
        return rows["reference_answer"]
    return rows["answer"].where(rows["explained"].astype(bool))


def predict(fakevlm_model: FakeVLM, manifest: pd.DataFrame, params: dict[str, Any], question: str) -> pd.DataFrame:
    """One row per benchmark image: the generated answer, its parsed verdict and the reference."""
    frames = []
    for split, benchmark in benchmark_splits(params):
        rows = split_rows(manifest, split)
        examples = load_examples(rows)
        answers, fake_probabilities = fakevlm_model.answer(
            [e.rgb_image() for e in examples], question, params["max_new_tokens"], params["batch_size"]
        )
        frames.append(
            pd.DataFrame(
                {
                    "benchmark": benchmark,
                    "id": rows["id"].to_numpy(),
                    "image_path": rows["image_path"].to_numpy(),
                    "category": rows["category"].to_numpy(),
                    "label": rows["label"].to_numpy(),
                    "artifact_family": rows["artifact_family"].to_numpy(),
                    "artifact_region": rows["artifact_region"].to_numpy(),
                    "reference": _references(rows, params, split).to_numpy(),
                    "prediction": answers,
                    "predicted_label": [parse_verdict(a) for a in answers],
                    "fake_probability": fake_probabilities,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def compute_metrics(predictions: pd.DataFrame) -> dict[str, Any]:
    """Accuracy, F1, ROUGE-L and CSS per benchmark, overall and per category."""
    metrics = {}
    for benchmark, rows in predictions.groupby("benchmark", sort=True):
        metrics[benchmark] = score_benchmark(rows)
        metrics[benchmark].update(probability_scores(rows["fake_probability"].tolist(), rows["label"].tolist()))
        for category, part in rows.groupby("category", sort=True):
            metrics[benchmark]["per_category"][category].update(
                probability_scores(part["fake_probability"].tolist(), part["label"].tolist()))
        predicted = rows["predicted_label"].fillna(UNPARSED)
        metrics[benchmark]["confusion"] = {
            "truth": list(CLASSES), "predicted": [*CLASSES, UNPARSED],
            "counts": confusion_matrix(rows["label"], predicted, labels=[*CLASSES, UNPARSED])[:2].tolist(),
        }
        metrics[benchmark]["per_generator"] = per_generator(rows)
        log.info(
            "%s: accuracy %.3f  f1 %.3f  rouge_l %.3f  css %.3f  (n=%d)",
            benchmark,
            metrics[benchmark]["accuracy"],
            metrics[benchmark]["f1"],
            metrics[benchmark]["rouge_l"],
            metrics[benchmark]["css"],
            metrics[benchmark]["n"],
        )
    return metrics


def score_benchmark(rows: pd.DataFrame) -> dict[str, Any]:
    """score() of one benchmark's predictions: the verdict on every image, ROUGE-L and CSS on those
    with a reference (all of FakeClue's; LOKI's open-ended ones), counted in `n_explained`."""
    explained = rows[rows["reference"].notna()]
    result = score_verdicts(rows["predicted_label"].fillna(UNPARSED).tolist(), rows["label"].tolist(),
                            rows["category"].tolist())
    text = score(explained["prediction"].tolist(), explained["reference"].tolist(), explained["label"].tolist(),
                 categories=explained["category"].tolist()) if len(explained) else {"per_category": {}}
    scopes = [(result, text), *((part, text["per_category"].get(category, {}))
                                for category, part in result["per_category"].items())]
    for scope, scored in scopes:
        scope.update(rouge_l=scored.get("rouge_l", math.nan), css=scored.get("css", math.nan),
                     n_explained=scored.get("n", 0))
    return result


def per_generator(rows: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Per generator (artifact family or network, where the source says which; else "unknown"):
    its fakes against all of the split's real images, so accuracy, fake recall (`fake_accuracy`),
    real recall (`real_accuracy`), AP and ROC-AUC are each that generator's detection task."""
    is_real = (rows["label"] == "real").to_numpy()
    generators = rows["artifact_family"].fillna("unknown").to_numpy()
    predicted = rows["predicted_label"].fillna(UNPARSED).to_numpy()
    results = {}
    for generator in sorted(set(generators[~is_real])):
        keep = is_real | (generators == generator)
        labels = rows["label"].to_numpy()[keep].tolist()
        results[generator] = {
            "n_fake": int(np.sum(~is_real & (generators == generator))),
            **score_verdicts(predicted[keep].tolist(), labels),
            **probability_scores(rows["fake_probability"].to_numpy()[keep].tolist(), labels),
        }
    return results


def explanation_faithfulness(rows: pd.DataFrame, cues: dict[str, list[str]], whole_image: str) -> dict[str, Any] | None:
    """metrics.faithfulness of the explanations of the fakes the model caught whose family is known
    (None when a split has none), and `real_names_artifact`: the share of reals judged real whose
    explanation names an artifact family all the same."""
    caught = rows[(rows["label"] == "fake") & (rows["predicted_label"] == "fake") & rows["artifact_family"].isin(list(cues))]
    if caught.empty:
        return None
    result = faithfulness(caught["prediction"].tolist(), caught["artifact_family"].tolist(),
                          caught["artifact_region"].tolist(), cues, whole_image)
    reals = rows.loc[(rows["label"] == "real") & (rows["predicted_label"] == "real"), "prediction"]
    result["real_names_artifact"] = float(np.mean([bool(named_families(text, cues)) for text in reals])) \
        if len(reals) else math.nan
    return result


def robustness(fakevlm_model: FakeVLM, rows: pd.DataFrame, params: dict[str, Any], question: str) -> dict[str, Any]:
    """One benchmark split's verdict metrics again under each degradation of the configured sweep,
    as {"jpeg_75": {kind, strength, accuracy, fake/real accuracy, AP, ROC-AUC, ...}}; the verdict is
    read from the first tokens of the answer, which hold it."""
    sweep = params["robustness"]["sweeps"][params["robustness"]["sweep"]] if params["robustness"]["sweep"] else {}
    images = [example.rgb_image() for example in load_examples(rows)]
    labels = rows["label"].tolist()
    results = {}
    for kind, strengths in sorted(sweep.items()):
        for strength in strengths:
            answers, probabilities = fakevlm_model.answer([degrade(image, kind, strength) for image in images], question,
                                                          params["verdict_max_new_tokens"], params["batch_size"])
            predicted = [parse_verdict(answer) or UNPARSED for answer in answers]
            results[f"{kind}_{strength:g}"] = {"kind": kind, "strength": float(strength),
                                               **score_verdicts(predicted, labels), **probability_scores(probabilities, labels)}
    return results


def calibrate(fakevlm_model: FakeVLM, manifest: pd.DataFrame, params: dict[str, Any], question: str) -> float:
    """The temperature of the verdict's fake probability (metrics.fit_temperature), fitted on the
    calibration split: neither trained on nor benchmarked. 1 (no change) when no answer there
    names a verdict, as an untrained model's."""
    rows = split_rows(manifest, params["calibration"]["split"])
    _, probabilities = fakevlm_model.answer([example.rgb_image() for example in load_examples(rows)], question,
                                            params["verdict_max_new_tokens"], params["batch_size"])
    if all(math.isnan(p) for p in probabilities):
        log.warning("calibration: no answer on split %r names a verdict; temperature 1 (unchanged)",
                    params["calibration"]["split"])
        return 1.0
    temperature = fit_temperature(probabilities, rows["label"].tolist())
    log.info("calibration: temperature %.3f fitted on %d images of split %r", temperature, len(rows),
             params["calibration"]["split"])
    return temperature


def baseline_verdicts(baseline_model: CNNDetector, rows: pd.DataFrame) -> tuple[list[str], list[float]]:
    """The CNN baseline's verdict (fake at a probability of 0.5) and fake probability of each row."""
    probabilities = baseline_model.fake_probability([e.rgb_image() for e in load_examples(rows)])
    return [LABELS[int(p >= 0.5)] for p in probabilities], probabilities


def evaluate_baseline(
    baseline_model: CNNDetector, validated_manifest: pd.DataFrame, params: dict[str, Any]
) -> dict[str, Any]:
    """The CNN baseline's verdict metrics on every benchmark, overall and per category."""
    metrics = {}
    for split, benchmark in benchmark_splits(params):
        rows = split_rows(validated_manifest, split)
        predicted, _ = baseline_verdicts(baseline_model, rows)
        metrics[benchmark] = score_verdicts(predicted, rows["label"].tolist(), rows["category"].tolist())
        log.info("%s: baseline CNN accuracy %.3f", benchmark, metrics[benchmark]["accuracy"])
    return metrics


def evaluate(
    fakevlm_model: FakeVLM,
    validated_manifest: pd.DataFrame,
    baseline_metrics: dict[str, Any],
    params: dict[str, Any],
    question: str,
    family_cues: dict[str, list[str]],
) -> tuple[pd.DataFrame, dict[str, Any], dict[str, dict[str, float]]]:
    """Predictions, the metrics report (the baseline's beside FakeVLM's, the explanations'
    faithfulness, the robustness sweep) and the metrics for MLflow."""
    predictions = predict(fakevlm_model, validated_manifest, params, question)
    metrics = compute_metrics(predictions)
    if params["calibration"]["split"]:
        temperature = calibrate(fakevlm_model, validated_manifest, params, question)
        predictions["fake_probability_calibrated"] = apply_temperature(predictions["fake_probability"], temperature)
    for split, benchmark in benchmark_splits(params):
        swept = robustness(fakevlm_model, split_rows(validated_manifest, split), params, question)
        if swept:
            metrics[benchmark]["robustness"] = swept
    for benchmark, rows in predictions.groupby("benchmark", sort=True):
        if "fake_probability_calibrated" in rows:
            metrics[benchmark]["calibrated"] = {"temperature": temperature, **probability_scores(
                rows["fake_probability_calibrated"].tolist(), rows["label"].tolist(), params["calibration_bins"])}
        found = explanation_faithfulness(rows, family_cues, params["whole_image_region"])
        if found:
            metrics[benchmark]["faithfulness"] = found
            log.info("%s: the explanation names the artifact family of %.3f of the caught fakes (n=%d)",
                     benchmark, found["family_named"], found["n"])
    for benchmark, baseline in baseline_metrics.items():
        metrics[benchmark]["baseline_cnn"] = baseline
    mlflow_metrics = {k: {"value": v, "step": 0} for k, v in flatten_metrics(metrics).items()}
    return predictions, metrics, mlflow_metrics


def reliability_table(predictions: pd.DataFrame, n_bins: int) -> pd.DataFrame:
    """Per benchmark and confidence bin: mean confidence of the predicted class, accuracy, count."""
    rows = predictions.dropna(subset=["fake_probability"])
    p_fake = rows["fake_probability"].to_numpy()
    confidence = np.maximum(p_fake, 1 - p_fake)
    table = pd.DataFrame({
        "benchmark": rows["benchmark"].to_numpy(),
        "bin": np.clip(((confidence - 0.5) * 2 * n_bins).astype(int), 0, n_bins - 1),
        "confidence": confidence,
        "accuracy": ((p_fake >= 0.5) == (rows["label"] == "fake").to_numpy()).astype(float),
    })
    grouped = table.groupby(["benchmark", "bin"], sort=True)
    return grouped.agg(confidence=("confidence", "mean"), accuracy=("accuracy", "mean"),
                       count=("accuracy", "size")).reset_index()


def _figures(metrics: dict[str, Any], reliability: pd.DataFrame, calibrated: pd.DataFrame | None) -> dict[str, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    diagram, axis = plt.subplots(figsize=(4.5, 4.5))
    axis.plot([0.5, 1], [0.5, 1], "k:", label="perfectly calibrated")
    for (benchmark, part), colour in zip(reliability.groupby("benchmark", sort=True), plt.rcParams["axes.prop_cycle"]):
        axis.plot(part["confidence"], part["accuracy"], "o-", label=benchmark, **colour)
        if calibrated is not None:
            after = calibrated[calibrated["benchmark"] == benchmark]
            axis.plot(after["confidence"], after["accuracy"], "x--", label=f"{benchmark}, temperature-scaled", **colour)
    axis.set(xlabel="confidence of the verdict", ylabel="accuracy", title="Reliability diagram")
    axis.legend()
    bars, axis = plt.subplots(figsize=(7, 3.5))
    benchmarks = sorted(metrics)
    categories = sorted({c for m in metrics.values() for c in m["per_category"]})
    width = 0.8 / (2 * len(benchmarks))
    for i, benchmark in enumerate(benchmarks):
        for j, (label, source) in enumerate((("FakeVLM", metrics[benchmark]),
                                             ("CNN", metrics[benchmark].get("baseline_cnn", {})))):
            values = [source.get("per_category", {}).get(c, {}).get("accuracy", np.nan) for c in categories]
            axis.bar(np.arange(len(categories)) + (2 * i + j) * width, values, width, label=f"{label} {benchmark}")
    axis.set_xticks(np.arange(len(categories)) + 0.4 - width / 2, categories)
    axis.set(ylabel="accuracy", ylim=(0, 1), title="Accuracy per category")
    axis.legend(fontsize="small")
    figures = {"reliability_diagram": diagram, "per_category_accuracy": bars}
    swept = {benchmark: m["robustness"] for benchmark, m in metrics.items() if m.get("robustness")}
    if swept:
        figures["robustness"] = _robustness_figure(plt, metrics, swept)
    return figures


def _robustness_figure(plt, metrics: dict[str, Any], swept: dict[str, dict[str, Any]]):
    """Accuracy against each degradation's strength, per benchmark; the first point is the clean split."""
    kinds = sorted({s["kind"] for results in swept.values() for s in results.values()})
    figure, axes = plt.subplots(1, len(kinds), figsize=(4 * len(kinds), 3.5), squeeze=False)
    for axis, kind in zip(axes[0], kinds):
        for benchmark, results in sorted(swept.items()):
            points = sorted([(CLEAN[kind], metrics[benchmark]["accuracy"]),
                             *((s["strength"], s["accuracy"]) for s in results.values() if s["kind"] == kind)])
            axis.plot(*zip(*points), "o-", label=benchmark)
        axis.set(xlabel=f"{kind} strength", ylabel="accuracy", ylim=(0, 1), title=kind)
        if kind == "jpeg":
            axis.invert_xaxis()   # quality: lower is stronger
    axes[0][0].legend(fontsize="small")
    return figure


def _thumbnail(image_path: str) -> str:
    with open_image(image_path) as image:
        thumb = image.convert("RGB")
        thumb.thumbnail((96, 96))
    return "data:image/png;base64," + encode_image(thumb)


def _ranked(predictions: pd.DataFrame) -> pd.DataFrame:
    """Wrong verdicts first, the most confident first; then the lowest ROUGE-L; with the columns
    `group` (the fake's family or generator, or "real images"), `wrong`, `confidence` and `rouge`."""
    return predictions.assign(
        group=np.where(predictions["label"] == "real", "real images",
                       predictions["artifact_family"].fillna("unknown generator").astype(str)),
        wrong=predictions["predicted_label"] != predictions["label"],
        confidence=(predictions["fake_probability"] - 0.5).abs().fillna(0.5),
        rouge=rouge_l_scores(predictions["prediction"].tolist(), predictions["reference"].fillna("").tolist()),
    ).sort_values(["wrong", "confidence", "rouge", "id"], ascending=[False, False, True, True])


def _with_thumbnails(rows: pd.DataFrame) -> list[dict[str, Any]]:
    return [{**row, "image": _thumbnail(row["image_path"])} for row in rows.to_dict(orient="records")]


def worst_answers(predictions: pd.DataFrame, count: int) -> list[dict[str, Any]]:
    """The `count` worst answers (`_ranked`), each with its thumbnail: the notebook's list."""
    return _with_thumbnails(_ranked(predictions).head(count))


def report_examples(predictions: pd.DataFrame, per_group: int) -> list[dict[str, Any]]:
    """Images for the report, per benchmark and group (each fake family or generator, and the real
    images): the group's worst answer (`_ranked`) when it is a mistake, then its right answers
    closest to their reference, `per_group` in all; each with its thumbnail."""
    chosen = []
    for _, rows in _ranked(predictions).groupby(["benchmark", "group"], sort=True):
        mistake = rows[rows["wrong"]].head(1)
        right = rows[~rows["wrong"]].sort_values(["rouge", "id"], ascending=[False, True])
        chosen.append(pd.concat([mistake, right.head(per_group - len(mistake))]))
    return _with_thumbnails(pd.concat(chosen))


def report_evaluation(
    predictions: pd.DataFrame, metrics: dict[str, Any], params: dict[str, Any]
) -> tuple[str, pd.DataFrame, pd.DataFrame]:
    """The HTML report, and the confusion and reliability tables for `dvc plots`; the page and
    its figures also go to the active MLflow run."""
    import matplotlib.pyplot as plt
    import mlflow  # here, not at module level: Kedro imports every pipeline on each run

    reliability = reliability_table(predictions, params["calibration_bins"])
    calibrated = reliability_table(predictions.assign(fake_probability=predictions["fake_probability_calibrated"]),
                                   params["calibration_bins"]) if "fake_probability_calibrated" in predictions else None
    figures = _figures(metrics, reliability, calibrated)
    page = render_evaluation_html(metrics, {name: figure_data_uri(f) for name, f in figures.items()},
                                  report_examples(predictions, params["report_samples"]))
    if mlflow.active_run() is not None:
        mlflow.log_text(page, "evaluation/report.html")
        for name, figure in figures.items():
            mlflow.log_figure(figure, f"evaluation/{name}.png")
    for figure in figures.values():
        plt.close(figure)
    confusion = pd.DataFrame({"benchmark": predictions["benchmark"], "actual": predictions["label"],
                              "predicted": predictions["predicted_label"].fillna(UNPARSED)})
    return page, confusion, reliability
