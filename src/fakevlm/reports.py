"""Readable HTML pages for the reports the pipelines save as JSON.

Every value is escaped with `html.escape`: ids, paths and answers come from data sets that anyone
may have written, and the page is opened in a browser and in the MLflow UI.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from typing import Any

_STYLE = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin-bottom:2em}"
          "th,td{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}"
          ".fail,.wrong{background:#fde2e2}.pass{background:#e3f6e3}")


def _cell(value: Any) -> str:
    """A table cell's text: lists joined, None as empty, everything escaped."""
    if isinstance(value, (list, tuple)):
        value = "; ".join(str(item) for item in value)
    return html.escape("" if value is None else str(value))


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], row_classes: Iterable[str] | None = None) -> str:
    """An HTML table with escaped cells; `row_classes` (one per row) colour the rows."""
    rows = list(rows)
    classes = list(row_classes) if row_classes is not None else [""] * len(rows)
    head = "".join(f"<th>{_cell(header)}</th>" for header in headers)
    body = "".join(f'<tr class="{html.escape(css)}">' + "".join(f"<td>{_cell(value)}</td>" for value in row) + "</tr>"
                   for row, css in zip(rows, classes))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_validation_html(report: dict[str, Any]) -> str:
    """The validation report as a page: the expectations, the leakage pairs, then the failed rows."""
    leakage = report.get("leakage", {})
    verdict = "passed" if report["success"] else "FAILED"
    parts = [
        f"<h1>Validation report: {html.escape(verdict)}</h1>",
        f"<p>{report['n_rows']} rows, {report['n_failed_rows']} failing (quarantined).</p>",
        "<h2>Expectations</h2>",
        table(["check", "expectation", "column", "success", "unexpected", "failing ids (first)"],
              ([e["check"], e["expectation"], e["column"], e["success"], e["unexpected_count"], e["failed_ids"]]
               for e in report["expectations"]),
              ("pass" if e["success"] else "fail" for e in report["expectations"])),
        f"<h2>Near-duplicates across splits: {leakage.get('n_cross_split_pairs', 0)}</h2>",
        f"<p>Perceptual-hash distance at most {_cell(leakage.get('max_distance'))} bits; "
        f"at most {_cell(leakage.get('max_allowed'))} pairs allowed.</p>",
        table(["id", "split", "id", "split", "distance"],
              ([p["a"]["id"], p["a"]["split"], p["b"]["id"], p["b"]["split"], p["distance"]]
               for p in leakage.get("cross_split_pairs", []))),
        "<h2>Images the loaders convert</h2>",
        table(["conversion", "rows"], sorted(_note_counts(report.get("image_notes", [])).items())),
        "<h2>Failed rows</h2>",
        table(["row", "id", "image", "reasons", "answer (start)"],
              ([r["row"], r["id"], r["image_path"], r["reasons"], r.get("answer")] for r in report["failed_rows"])),
    ]
    title = f"Validation report: {verdict}"
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{_STYLE}</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n")


def _note_counts(notes: Iterable[dict[str, Any]]) -> dict[str, int]:
    """How many rows need each mode conversion or an EXIF transpose."""
    counts: dict[str, int] = {}
    for note in notes:
        kinds = [note.get("mode_normalisation")]
        if note.get("exif_orientation") is not None:
            kinds.append(f"EXIF orientation {note['exif_orientation']} -> exif_transpose")
        for kind in filter(None, kinds):
            counts[kind] = counts.get(kind, 0) + 1
    return counts


# --- evaluation ------------------------------------------------------------------------------------

SUMMARY_KEYS = ("n", "n_explained", "accuracy", "verdict_token_accuracy", "f1", "macro_f1", "real_accuracy", "fake_accuracy",
                "rouge_l", "css", "roc_auc", "average_precision", "ece", "n_unparsed")


def _number(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else _cell(value)


def figure_data_uri(figure) -> str:
    """A matplotlib figure as an inline PNG for an <img> tag."""
    import base64
    import io

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _calibration_section(result: dict[str, Any]) -> list[str]:
    calibrated = result.get("calibrated")
    if not calibrated:
        return []
    return [f"<p>Calibration (temperature {_number(calibrated['temperature'])}, fitted on a split of its own): "
            f"ECE {_number(result['ece'])} before, {_number(calibrated['ece'])} after; the verdicts and the "
            f"ROC-AUC do not change.</p>"]


def _faithfulness_section(found: dict[str, Any] | None) -> list[str]:
    """Whether the explanations of the caught fakes name the artifact that was made, per family."""
    if not found:
        return []
    rows = [(family, per) for family, per in sorted(found["per_family"].items())] + [("all", found)]
    return [
        "<h3>Explanation faithfulness (caught fakes of a known artifact family)</h3>",
        table(["family", "n", "names its family", "names another family", "with a place", "names the place"],
              ([family, per["n"], _number(per["family_named"]), _number(per["wrong_family_named"]), per["n_placed"],
                _number(per["place_named"])] for family, per in rows)),
        f"<p>Real images judged real whose explanation names an artifact family all the same: "
        f"{_number(found['real_names_artifact'])}</p>",
    ]


def _examples_section(examples: Sequence[dict[str, Any]]) -> list[str]:
    """Per group (family, generator, real images): the image, the truth, the verdict, the answer and its reference."""
    if not examples:
        return []
    rows = "".join(
        f"<tr class=\"{'wrong' if item['wrong'] else 'right'}\"><td><img src=\"{html.escape(item['image'])}\" "
        f"width=\"96\" alt=\"{_cell(item['id'])}\"></td><td>{_cell(item['group'])}<br>{_cell(item['id'])}</td>"
        f"<td>{_cell(item['label'])}</td><td class=\"verdict\">{_cell(item['predicted_label'] or 'no verdict')}</td>"
        f"<td>{_number(item['fake_probability'])}</td><td>{_cell(item['prediction'])}</td>"
        f"<td>{_cell(item['reference'])}</td></tr>"
        for item in examples)
    return ["<h3>Examples (per group: the most confident mistake, then the answers closest to their reference)</h3>",
            "<table><thead><tr><th>image</th><th>group, id</th><th>truth</th><th>verdict</th><th>fake probability</th>"
            f"<th>generated</th><th>reference</th></tr></thead><tbody>{rows}</tbody></table>"]


def _robustness_section(result: dict[str, Any]) -> list[str]:
    """The verdict metrics of the split as it is, then under each degradation of the sweep."""
    if not result.get("robustness"):
        return []
    rows = [("none", "", result), *((swept["kind"], swept["strength"], swept)
                                    for _, swept in sorted(result["robustness"].items()))]
    return [
        "<h3>Robustness (the same images degraded)</h3>",
        table(["degradation", "strength", "accuracy", "fake recall", "real recall", "AP", "ROC-AUC"],
              ([kind, strength, _number(m["accuracy"]), _number(m["fake_accuracy"]), _number(m["real_accuracy"]),
                _number(m.get("average_precision")), _number(m.get("roc_auc"))] for kind, strength, m in rows)),
    ]


def render_evaluation_html(metrics: dict[str, Any], figures: dict[str, str], examples: Sequence[dict[str, Any]]) -> str:
    """The evaluation report: per benchmark the summary (FakeVLM beside the CNN baseline), the
    confusion matrix, categories, generators, calibration, the explanations' faithfulness, the
    robustness sweep and example images with their answers; then the figures. One file: the
    images are inline."""
    parts = ["<h1>Evaluation report</h1>"]
    for benchmark, result in sorted(metrics.items()):
        baseline = result.get("baseline_cnn", {})
        parts += [
            f"<h2>{_cell(benchmark)}</h2>",
            table(["metric", "FakeVLM", "CNN baseline"],
                  ([key, _number(result.get(key)), _number(baseline.get(key))] for key in SUMMARY_KEYS)),
            "<h3>Confusion matrix (rows: truth)</h3>",
            table(["truth \\ answer", *result["confusion"]["predicted"]],
                  ([truth, *counts] for truth, counts in zip(result["confusion"]["truth"], result["confusion"]["counts"]))),
            "<h3>Per category</h3>",
            table(["category", "n", "accuracy", "real recall", "fake recall", "CNN baseline accuracy", "F1", "ROUGE-L",
                   "CSS", "ECE"],
                  ([cat, per["n"], _number(per["accuracy"]), _number(per["real_accuracy"]), _number(per["fake_accuracy"]),
                    _number(baseline.get("per_category", {}).get(cat, {}).get("accuracy")),
                    _number(per["f1"]), _number(per["rouge_l"]), _number(per["css"]), _number(per.get("ece"))]
                   for cat, per in sorted(result["per_category"].items()))),
            "<h3>Per generator (its fakes against all real images of the split)</h3>",
            table(["generator", "fakes", "accuracy", "fake recall", "real recall", "AP", "ROC-AUC"],
                  ([generator, per["n_fake"], _number(per["accuracy"]), _number(per["fake_accuracy"]),
                    _number(per["real_accuracy"]), _number(per["average_precision"]), _number(per["roc_auc"])]
                   for generator, per in sorted(result["per_generator"].items()))),
            *_calibration_section(result),
            *_faithfulness_section(result.get("faithfulness")),
            *_robustness_section(result),
            *_examples_section([item for item in examples if item["benchmark"] == benchmark]),
        ]
    for name, uri in sorted(figures.items()):
        parts.append(f"<h2>{_cell(name)}</h2><img alt=\"{_cell(name)}\" src=\"{html.escape(uri)}\">")
    return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Evaluation report</title>"
            f"<style>{_STYLE}</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n")
