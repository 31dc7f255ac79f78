"""Validation: a Great Expectations suite over the annotated manifest, then a gate.

`check_manifest` runs the suite and splits the rows into passing and quarantined ones, with the
reasons; `enforce_gate` stops the run when too many rows fail and otherwise drops the failing rows.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

log = logging.getLogger(__name__)

# Columns the suite reads and every row needs a value in; a manifest without one of them is a
# schema error, not a row-level failure.
REQUIRED_COLUMNS = ("id", "image_path", "label", "category", "split", "width", "height", "answer")


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


def image_facts(image_paths: pd.Series) -> pd.DataFrame:
    """Whether each image exists and decodes, and its decoded size and PIL mode.

    This is the only place in validation that reads image files: GX checks table values, so the
    facts about the files become columns it can check. Decoding (`load()`, not just the header)
    catches truncated files that would otherwise fail in the middle of training.
    """
    rows = []
    for path in image_paths:
        # A fact that cannot be known (no path, so no file; no file, so nothing to decode) stays empty:
        # GX skips nulls, so each fault is reported once, by the check that names its cause.
        exists = Path(path).is_file() if isinstance(path, str) else None
        facts: dict[str, Any] = {"file_exists": exists, "decodes": None, "decoded_width": None,
                                 "decoded_height": None, "image_mode": None, "decode_error": None}
        if exists:
            try:
                with Image.open(path) as image:
                    image.load()
                    facts.update(decodes=True, decoded_width=image.width, decoded_height=image.height,
                                 image_mode=image.mode)
            except Exception as error:  # noqa: BLE001 - whatever PIL raises, the file is unusable
                facts.update(decodes=False, decode_error=f"{type(error).__name__}: {error}")
        rows.append(facts)
    facts_frame = pd.DataFrame(rows, columns=["file_exists", "decodes", "decoded_width", "decoded_height",
                                              "image_mode", "decode_error"], index=image_paths.index)
    # Nullable dtypes keep "no value" distinct from False/0 and print sizes as integers.
    return facts_frame.astype({"file_exists": "boolean", "decodes": "boolean",
                               "decoded_width": "Int64", "decoded_height": "Int64"})


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
    add("image_decodes", gxe.ExpectColumnValuesToBeInSet, "image does not decode ({decode_error})",
        column="decodes", value_set=[True])
    add("image_mode_in_set", gxe.ExpectColumnValuesToBeInSet, "image mode {image_mode!r} " + one_of("image_modes"),
        column="image_mode", value_set=params["image_modes"])
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


def check_manifest(annotated_manifest: pd.DataFrame, params: dict[str, Any]) -> tuple[dict[str, Any], pd.DataFrame]:
    """Validate every row; return the report and the quarantine (failing rows with a `reason`).

    Rows are addressed by position (`row` in `failed_rows`) because ids may be missing or repeated,
    which are among the faults looked for. Passing rows plus quarantined rows = all rows.
    """
    missing = [column for column in REQUIRED_COLUMNS if column not in annotated_manifest.columns]
    if missing:
        raise DataValidationError(f"annotated_manifest lacks the columns {missing}")
    manifest = annotated_manifest.reset_index(drop=True)  # GX reports row indices; make them positions
    work = pd.concat([manifest, image_facts(manifest["image_path"])], axis=1)
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
    report = {
        "success": all(entry["success"] for entry in expectations),
        "n_rows": len(manifest),
        "n_failed_rows": len(failed),
        "expectations": expectations,
        "failed_rows": [{"row": row, "id": _plain(manifest.at[row, "id"]),
                         "image_path": _plain(manifest.at[row, "image_path"]), "reasons": reasons[row]}
                        for row in failed],
    }
    quarantine = manifest.iloc[failed].reset_index(drop=True)
    quarantine["reason"] = pd.Series(["; ".join(reasons[row]) for row in failed], dtype=object)
    log.info("validated %d rows: %d pass, %d quarantined", len(manifest), len(manifest) - len(failed), len(failed))
    return report, quarantine


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


def enforce_gate(annotated_manifest: pd.DataFrame, validation_report: dict[str, Any],
                 params: dict[str, Any]) -> pd.DataFrame:
    """Stop the run on a failed validation, or pass on the rows that are not quarantined.

    Raises DataValidationError when the report failed and the share of failing rows exceeds
    `max_failed_fraction` (default 0.0: any failure stops the run).
    """
    n_rows = len(annotated_manifest)
    if validation_report["n_rows"] != n_rows:
        raise ValueError(f"the validation report covers {validation_report['n_rows']} rows but the manifest "
                         f"has {n_rows}; run check_manifest on this manifest first")
    failed_rows = [row["row"] for row in validation_report["failed_rows"]]
    fraction = len(failed_rows) / n_rows if n_rows else 0.0
    if not validation_report["success"] and fraction > float(params.get("max_failed_fraction", 0.0)):
        raise DataValidationError(_failure_message(validation_report, fraction, params))
    validated = annotated_manifest.reset_index(drop=True).drop(index=failed_rows).reset_index(drop=True)
    if failed_rows:
        log.warning("validation: %d of %d rows (%.1f%%) quarantined within the tolerance; see %s",
                    len(failed_rows), n_rows, 100 * fraction, params["quarantine_path"])
    else:
        log.info("validation: all %d rows pass", n_rows)
    return validated
