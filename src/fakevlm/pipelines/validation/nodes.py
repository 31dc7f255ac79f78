"""Validation: a Great Expectations suite over the annotated manifest, leakage checks, then a gate.

`check_manifest` runs the suite (manifest values plus facts about each image file) and splits the
rows into passing and quarantined ones, with the reasons, and looks for near-duplicate images
across splits; `report_validation` turns the results into the summary and an HTML page;
`enforce_gate` stops the run when too many rows fail or any split leaks into another, and
otherwise drops the failing rows.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd

from fakevlm.image_checks import HASH_BITS, conflicting_copies, cross_split_pairs, image_facts
from fakevlm.reports import render_validation_html

log = logging.getLogger(__name__)

# Columns the suite reads and every row needs a value in; a manifest without one of them is a
# schema error, not a row-level failure.
REQUIRED_COLUMNS = ("id", "image_path", "label", "category", "split", "width", "height", "answer")
STAGE = "validation"  # the quarantine's `stage` column
ANSWER_EXCERPT = 120  # characters of a failing row's answer quoted in the report


class DataValidationError(ValueError):
    """The annotated manifest failed validation beyond the tolerated share of rows."""


@dataclass(frozen=True)
class Check:
    """One expectation with the name the report uses and the reason a failing row gets.

    `reason` is a `str.format` template over the row's values (manifest columns and image facts).
    """

    name: str
    expectation: Any  # a great_expectations.expectations.Expectation
    reason: str


def _great_expectations() -> ModuleType:
    """The great_expectations module, imported on first use with analytics off and quiet logging.

    Not imported at module level: it takes 2-4 s and Kedro imports every pipeline on each run.
    GX reads the analytics switch when it is first imported, so the switch is set just before.
    """
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    # GX's INFO lines are about its own set-up (at import and per context); one of its modules sets
    # its logger to INFO on import, hence the second call.
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    import great_expectations as gx

    logging.getLogger("great_expectations.data_context.types.base").setLevel(logging.WARNING)
    return gx


def build_checks(params: dict[str, Any]) -> list[Check]:
    """The suite's expectations, in report order, from the `validation` parameters."""
    gxe = _great_expectations().expectations

    checks: list[Check] = []

    def add(name: str, expectation_class: type, reason: str, **kwargs: Any) -> None:
        # meta carries the check's name: GX returns results in its own order, not the suite's.
        checks.append(Check(name, expectation_class(meta={"check": name}, **kwargs), reason))

    def literal(text: str) -> str:
        # configured text goes into a format template; its braces (e.g. a regex's {2}) are not fields
        return text.replace("{", "{{").replace("}", "}}")

    def one_of(key: str) -> str:
        return "is not one of " + literal(", ".join(params[key]))

    width, height, length = params["width"], params["height"], params["answer_length"]
    # The other expectations skip nulls, so each required value is first checked to be there.
    for column in REQUIRED_COLUMNS:
        add(f"{column}_not_null", gxe.ExpectColumnValuesToNotBeNull, f"{column} is missing", column=column)
    add("id_unique", gxe.ExpectColumnValuesToBeUnique, "id {id!r} is not unique", column="id")
    add("label_in_set", gxe.ExpectColumnValuesToBeInSet, "label {label!r} " + one_of("labels"),
        column="label", value_set=params["labels"])
    add("category_in_set", gxe.ExpectColumnValuesToBeInSet, "category {category!r} " + one_of("categories"),
        column="category", value_set=params["categories"])
    add("split_in_set", gxe.ExpectColumnValuesToBeInSet, "split {split!r} " + one_of("splits"),
        column="split", value_set=params["splits"])
    add("file_exists", gxe.ExpectColumnValuesToBeInSet, "image file not found", column="file_exists", value_set=[True])
    add("label_agrees_with_copies", gxe.ExpectColumnValuesToBeNull,
        "the identical file (sha256 {file_sha256:.12}) is labelled differently in ids {conflicting_copies}",
        column="conflicting_copies")
    # Checked on the header, before decoding: a decompression bomb is reported, not decoded.
    add("within_pixel_limit", gxe.ExpectColumnValuesToBeInSet,
        "image too large to decode safely (decompression-bomb guard): {decode_error}",
        column="within_pixel_limit", value_set=[True])
    add("image_decodes", gxe.ExpectColumnValuesToBeInSet, "image does not decode ({decode_error})",
        column="decodes", value_set=[True])
    add("image_mode_in_set", gxe.ExpectColumnValuesToBeInSet, "image mode {image_mode!r} " + one_of("image_modes"),
        column="image_mode", value_set=params["image_modes"])
    add("aspect_ratio", gxe.ExpectColumnValuesToBeBetween,
        f"image is a sliver: {{decoded_width}}x{{decoded_height}} (aspect ratio over {params['max_aspect_ratio']})",
        column="aspect_ratio", max_value=params["max_aspect_ratio"])
    add("width_in_range", gxe.ExpectColumnValuesToBeBetween,
        f"width {{width}} is outside {width['min']}..{width['max']}",
        column="width", min_value=width["min"], max_value=width["max"])
    add("height_in_range", gxe.ExpectColumnValuesToBeBetween,
        f"height {{height}} is outside {height['min']}..{height['max']}",
        column="height", min_value=height["min"], max_value=height["max"])
    # Rows whose image did not decode have no decoded size; image_decodes already names them.
    add("width_matches_image", gxe.ExpectColumnPairValuesToBeEqual,
        "width {width} differs from the image's {decoded_width}",
        column_A="width", column_B="decoded_width", ignore_row_if="either_value_is_missing")
    add("height_matches_image", gxe.ExpectColumnPairValuesToBeEqual,
        "height {height} differs from the image's {decoded_height}",
        column_A="height", column_B="decoded_height", ignore_row_if="either_value_is_missing")
    add("answer_length", gxe.ExpectColumnValueLengthsToBeBetween,
        f"answer length is outside {length['min']}..{length['max']} characters",
        column="answer", min_value=length["min"], max_value=length["max"])
    # One regex per label, on that label's rows only: the answer must open with the matching verdict.
    for label, pattern in params["answer_patterns"].items():
        add(f"answer_verdict_{label}", gxe.ExpectColumnValuesToMatchRegex,
            f"answer does not open with the {literal(label)} verdict (/{literal(pattern)}/)",
            column="answer", regex=pattern, row_condition=f"label == {label!r}", condition_parser="pandas")
    return checks


def _run_suite(work: pd.DataFrame, checks: list[Check]) -> dict[str, dict[str, Any]]:
    """Validate `work` with `checks` in an ephemeral GX context; GX results keyed by check name.

    Raises DataValidationError when GX could not evaluate an expectation at all.
    """
    gx = _great_expectations()
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)  # no tqdm bars in Kedro's log
    batch_definition = (context.data_sources.add_pandas("manifest").add_dataframe_asset("annotated_manifest")
                        .add_batch_definition_whole_dataframe("all_rows"))
    suite = gx.ExpectationSuite(name="annotated_manifest")
    for check in checks:
        suite.add_expectation(check.expectation)
    batch = batch_definition.get_batch(batch_parameters={"dataframe": work})
    # COMPLETE lists every failing row's index, which the quarantine needs.
    results = batch.validate(suite, result_format={"result_format": "COMPLETE"})
    by_name = {result.expectation_config.meta["check"]: result for result in results.results}
    errors = [f"{name}: {info['exception_message']}" for name, result in by_name.items()
              for info in result.exception_info.values()
              if isinstance(info, dict) and info.get("raised_exception")]
    if errors:
        raise DataValidationError("the validation suite could not run:\n  " + "\n  ".join(sorted(set(errors))))
    return {name: {"success": bool(result.success), "unexpected_count": int(result.result["unexpected_count"]),
                   "rows": sorted(int(i) for i in result.result.get("unexpected_index_list") or [])}
            for name, result in by_name.items()}


def _plain(value: Any) -> Any:
    """A JSON-friendly Python value: numpy scalars unwrapped, missing values as None."""
    if isinstance(value, np.generic):
        value = value.item()
    return None if pd.api.types.is_scalar(value) and pd.isna(value) else value


def _column_label(expectation: Any) -> str:
    """The column(s) an expectation looks at, for the report."""
    kwargs = expectation.configuration.kwargs
    return kwargs.get("column") or f"{kwargs['column_A']}, {kwargs['column_B']}"


def _work_table(manifest: pd.DataFrame, params: dict[str, Any]) -> pd.DataFrame:
    """The manifest with the image facts and the exact-copy conflicts as columns GX can check."""
    work = pd.concat([manifest, image_facts(manifest["image_path"], int(params["max_pixels"]))], axis=1)
    work["conflicting_copies"] = conflicting_copies(work["id"], work["file_sha256"], work["label"])
    return work


def _leakage(work: pd.DataFrame, params: dict[str, Any]) -> dict[str, Any]:
    """Near-duplicate images in different splits: the count and the first pairs."""
    pairs = cross_split_pairs(work["perceptual_hash"], work["split"], int(params["near_duplicate_distance"]),
                              params.get("splits_that_may_share_images", []))

    def side(row: int) -> dict[str, Any]:
        return {"row": int(row), "id": _plain(work.at[row, "id"]), "split": _plain(work.at[row, "split"])}

    return {
        "max_distance": int(params["near_duplicate_distance"]),
        "hash_bits": HASH_BITS,
        "max_allowed": int(params["max_cross_split_duplicates"]),
        "n_cross_split_pairs": len(pairs),
        "cross_split_pairs": [{"a": side(a), "b": side(b), "distance": d}
                              for a, b, d in pairs[: params["max_pairs_in_report"]]],
    }


def _image_notes(work: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows whose image the loaders convert to RGB or that need `ImageOps.exif_transpose` to stand upright."""
    noted = work["mode_normalisation"].notna() | work["exif_orientation"].notna()
    return [{"row": int(row), "id": _plain(work.at[row, "id"]),
             "mode_normalisation": _plain(work.at[row, "mode_normalisation"]),
             "exif_orientation": _plain(work.at[row, "exif_orientation"])} for row in work.index[noted]]


def _excerpt(text: Any) -> str | None:
    """The start of an answer, for a reader to recognise the row."""
    text = _plain(text)
    return None if text is None else str(text)[:ANSWER_EXCERPT]


def check_manifest(annotated_manifest: pd.DataFrame, params: dict[str, Any]) -> tuple[dict[str, Any], pd.DataFrame]:
    """Validate every row; return the report and the quarantine (failing rows with `stage` and `reason`).

    Rows are addressed by position (`row` in `failed_rows`) because ids may be missing or repeated,
    which are among the faults looked for. Passing rows plus quarantined rows = all rows. The
    report's `leakage` lists near-duplicates across splits; they stay in (which copy is the
    leak is a judgement), and `success` is false when there are more than allowed.
    """
    missing = [column for column in REQUIRED_COLUMNS if column not in annotated_manifest.columns]
    if missing:
        raise DataValidationError(f"annotated_manifest lacks the columns {missing}")
    manifest = annotated_manifest.reset_index(drop=True)  # GX reports row indices; make them positions
    work = _work_table(manifest, params)
    checks = build_checks(params)
    outcomes = _run_suite(work, checks)

    reasons: dict[int, list[str]] = {}
    expectations = []
    for check in checks:  # report order = suite order, so reasons come in the same order for every row
        outcome = outcomes[check.name]
        for row in outcome["rows"]:
            values = {column: _plain(value) for column, value in work.iloc[row].items()}
            reasons.setdefault(row, []).append(check.reason.format_map(values))
        expectations.append({
            "check": check.name,
            "expectation": check.expectation.expectation_type,
            "column": _column_label(check.expectation),
            "success": outcome["success"],
            "unexpected_count": outcome["unexpected_count"],
            "failed_ids": [_plain(manifest.at[row, "id"]) for row in outcome["rows"][: params["max_ids_in_report"]]],
        })

    failed = sorted(reasons)
    leakage = _leakage(work, params)
    report = {
        "success": all(entry["success"] for entry in expectations)
        and leakage["n_cross_split_pairs"] <= leakage["max_allowed"],
        "n_rows": len(manifest),
        "n_failed_rows": len(failed),
        "expectations": expectations,
        "leakage": leakage,
        "image_notes": _image_notes(work),
        "failed_rows": [{"row": row, "id": _plain(manifest.at[row, "id"]),
                         "image_path": _plain(manifest.at[row, "image_path"]), "reasons": reasons[row],
                         "answer": _excerpt(manifest.at[row, "answer"])}
                        for row in failed],
    }
    quarantine = manifest.iloc[failed].reset_index(drop=True)
    quarantine["stage"] = pd.Series([STAGE] * len(failed), dtype=object)
    quarantine["reason"] = pd.Series(["; ".join(reasons[row]) for row in failed], dtype=object)
    log.info("validated %d rows: %d pass, %d quarantined, %d near-duplicate pairs across splits", len(manifest),
             len(manifest) - len(failed), len(failed), leakage["n_cross_split_pairs"])
    return report, quarantine


def summarise(validation_report: dict[str, Any], quarantine: pd.DataFrame) -> dict[str, Any]:
    """records_in, accepted, quarantined and quarantined rows by failing check.

    A row that breaks two checks counts once in `quarantined` and under each check in `by_reason`.
    Raises ValueError when the quarantine and the report disagree, so no record is lost unseen.
    """
    records_in = int(validation_report["n_rows"])
    accepted = records_in - int(validation_report["n_failed_rows"])
    quarantined = len(quarantine)
    if records_in != accepted + quarantined:
        raise ValueError(f"validation lost records: {records_in} in, {accepted} accepted, {quarantined} quarantined")
    by_reason = {entry["check"]: entry["unexpected_count"] for entry in validation_report["expectations"]
                 if entry["unexpected_count"]}
    return {"records_in": records_in, "accepted": accepted, "quarantined": quarantined, "by_reason": by_reason}


def report_validation(validation_report: dict[str, Any], quarantine: pd.DataFrame) -> tuple[dict[str, Any], str]:
    """The summary and the HTML page; the page also goes to the active MLflow run, if any.

    A separate node before the gate, so both are saved even when the gate then stops the run.
    """
    page = render_validation_html(validation_report)
    import mlflow  # here, not at module level: Kedro imports every pipeline on each run

    if mlflow.active_run() is not None:
        mlflow.log_text(page, "validation/validation_report.html")
    return summarise(validation_report, quarantine), page


def _failure_message(report: dict[str, Any], fraction: float, params: dict[str, Any]) -> str:
    """A readable account of a failed validation: expectations, first rows, where the rest is."""
    tolerated = float(params.get("max_failed_fraction", 0.0))
    lines = [f"Data validation failed: {report['n_failed_rows']} of {report['n_rows']} rows "
             f"({fraction:.1%}) fail, more than the tolerated {tolerated:.1%}.", "Failed expectations:"]
    lines += [f"  - {entry['check']} ({entry['expectation']} on {entry['column']}): "
              f"{entry['unexpected_count']} failing, e.g. ids {entry['failed_ids']}"
              for entry in report["expectations"] if not entry["success"]]
    shown = report["failed_rows"][: params["max_rows_in_error"]]
    lines.append("First failing rows:")
    lines += [f"  - id {row['id']!r} ({row['image_path']}): {'; '.join(row['reasons'])}" for row in shown]
    if len(report["failed_rows"]) > len(shown):
        lines.append(f"  ... and {len(report['failed_rows']) - len(shown)} more")
    lines.append(f"Full report: {params['report_path']}")
    lines.append(f"Failing rows with reasons: {params['quarantine_path']}")
    return "\n".join(lines)


def _leakage_message(leakage: dict[str, Any], params: dict[str, Any]) -> str:
    """A readable account of cross-split leakage, naming the first pairs."""
    lines = [f"Data validation failed: {leakage['n_cross_split_pairs']} pairs of near-duplicate images across "
             f"splits (perceptual-hash distance <= {leakage['max_distance']} of {leakage['hash_bits']} bits), "
             f"more than the allowed {leakage['max_allowed']}. The same picture in two splits leaks the "
             "evaluation into training; remove one of each pair at the source:"]
    shown = leakage["cross_split_pairs"][: params["max_rows_in_error"]]
    lines += [f"  - {p['a']['id']!r} ({p['a']['split']}) ~ {p['b']['id']!r} ({p['b']['split']}), "
              f"distance {p['distance']}" for p in shown]
    if leakage["n_cross_split_pairs"] > len(shown):
        lines.append(f"  ... and {leakage['n_cross_split_pairs'] - len(shown)} more")
    lines.append(f"Full report: {params['report_path']}")
    return "\n".join(lines)


def enforce_gate(annotated_manifest: pd.DataFrame, validation_report: dict[str, Any],
                 validation_summary: dict[str, Any], params: dict[str, Any]) -> pd.DataFrame:
    """Stop the run on a failed validation, or pass on the rows that are not quarantined.

    Raises DataValidationError when the share of failing rows exceeds `max_failed_fraction`
    (default 0.0: any failure stops the run) or when more than `max_cross_split_duplicates` pairs of
    images are near-duplicates across splits. Takes the summary so that it (and the HTML page,
    made by the same node) is saved before the gate can stop the run.
    """
    n_rows = len(annotated_manifest)
    if validation_report["n_rows"] != n_rows or validation_summary["records_in"] != n_rows:
        raise ValueError(f"the validation report covers {validation_report['n_rows']} rows but the manifest "
                         f"has {n_rows}; run check_manifest on this manifest first")
    failed_rows = [row["row"] for row in validation_report["failed_rows"]]
    fraction = validation_summary["quarantined"] / n_rows if n_rows else 0.0
    if any(not entry["success"] for entry in validation_report["expectations"]) \
            and fraction > float(params.get("max_failed_fraction", 0.0)):
        raise DataValidationError(_failure_message(validation_report, fraction, params))
    leakage = validation_report["leakage"]
    if leakage["n_cross_split_pairs"] > leakage["max_allowed"]:
        raise DataValidationError(_leakage_message(leakage, params))
    validated = annotated_manifest.reset_index(drop=True).drop(index=failed_rows).reset_index(drop=True)
    if failed_rows:
        log.warning("validation: %d of %d rows (%.1f%%) quarantined within the tolerance; see %s",
                    len(failed_rows), n_rows, 100 * fraction, params["quarantine_path"])
    else:
        log.info("validation: all %d rows pass", n_rows)
    return validated
