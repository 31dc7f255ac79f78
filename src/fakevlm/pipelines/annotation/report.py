"""The annotation quality report: the numbers (summary JSON, MLflow) and the page people read."""

from __future__ import annotations

import html
import re
from typing import Any

import numpy as np
import pandas as pd

from fakevlm.explanations import contradicts, word_count
from fakevlm.metrics import parse_verdict
from fakevlm.reports import _STYLE, table


def quality_summary(
    annotated: pd.DataFrame, quarantine: pd.DataFrame, outputs: pd.DataFrame,
    params: dict[str, Any], prompts: dict[str, Any],
) -> dict[str, Any]:
    """Counts (rows_in = annotated + quarantined), reasons, length distribution, aspect coverage
    per category, genericity rate, and per-annotator and between-annotator agreement."""
    reasons = quarantine["reason"].str.split(":").str[0].value_counts().sort_index()
    rows_in = len(annotated) + len(quarantine)
    words = _word_counts(annotated["answer"])
    bins = params["report"]["length_bins"]
    histogram = pd.cut(words, bins, right=False).value_counts(sort=False)
    return {
        "rows_in": rows_in,
        "annotated": len(annotated),
        "quarantined": len(quarantine),
        "kept_from_source": int((annotated["annotator"] == "source").sum()),
        "verdict_only": int((~annotated["explained"].astype(bool)).sum()),   # no clue found: no explanation
        "quarantine_reasons": {str(k): int(v) for k, v in reasons.items()},
        "genericity_rate": float(reasons.get("generic", 0) / rows_in) if rows_in else 0.0,
        "words": {"mean": _float(words.mean()), "min": int(words.min()) if len(words) else 0,
                  "max": int(words.max()) if len(words) else 0,
                  "histogram": {f"{int(b.left)}-{int(b.right)}": int(n) for b, n in histogram.items()}},
        "aspect_coverage": aspect_coverage(annotated, prompts),
        # each annotator's raw answers against every row's label, quarantined rows included: the
        # contradicting answers are the ones the filters sent there
        "annotators": {name: _annotator_stats(rows, pd.concat([annotated, quarantine]))
                       for name, rows in outputs.groupby("annotator")},
        "agreement": _agreement(outputs, annotated),
    }  # fmt: skip


def aspect_coverage(annotated: pd.DataFrame, prompts: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Per category, the share of its answers that touch each of its five aspects (any keyword)."""
    coverage = {}
    for category, rows in annotated.groupby("category", sort=True):
        if category not in prompts["categories"]:
            continue
        text = rows["answer"].str.lower()
        coverage[category] = {
            aspect["name"]: float(text.str.contains("|".join(map(re.escape, aspect["keywords"]))).mean())
            for aspect in prompts["categories"][category]["aspects"]
        }
    return coverage


def _annotator_stats(rows: pd.DataFrame, labelled: pd.DataFrame) -> dict[str, Any]:
    answered = rows[rows["error"].isna()]
    labels = labelled.set_index("id")["label"]
    known = answered[answered["id"].isin(labels.index)]
    return {
        "requests": len(rows),
        "failed": int(rows["error"].notna().sum()),
        "mean_words": _float(_word_counts(answered["answer"]).mean()),
        "contradiction_rate": _float(np.mean([contradicts(a, labels[i]) for i, a in zip(known["id"], known["answer"])])
                                     if len(known) else np.nan),
    }


def _agreement(outputs: pd.DataFrame, annotated: pd.DataFrame) -> dict[str, Any]:
    """With several annotators: the mean share of clues another annotator backs, and how often each
    pair of annotators states the same verdict."""
    names = sorted(outputs["annotator"].unique())
    if len(names) < 2:
        return {"annotators": len(names)}
    answers = outputs.pivot(index="id", columns="annotator", values="answer").dropna()
    verdicts = answers.map(lambda a: parse_verdict(a) or "none")
    pairs = {f"{a}~{b}": float((verdicts[a] == verdicts[b]).mean()) for i, a in enumerate(names) for b in names[i + 1 :]}
    return {"annotators": len(names), "clue_agreement": _float(annotated["clue_agreement"].astype(float).mean()),
            "verdict_agreement": pairs}


def _word_counts(answers: pd.Series) -> pd.Series:
    # int dtype even when empty: an empty string column's mean raises instead of giving NaN
    return pd.Series([word_count(a) for a in answers], dtype="int64")


def _float(value: Any) -> float | None:
    return None if value is None or pd.isna(value) else float(value)


def render_annotation_html(summary: dict[str, Any], quarantine: pd.DataFrame, examples: int) -> str:
    """The report as a page: counts, reasons, lengths, aspect coverage, annotators, quarantined rows."""
    coverage = summary["aspect_coverage"]
    parts = [
        "<h1>Annotation report</h1>",
        (f"<p>{summary['rows_in']} rows in: {summary['annotated']} annotated "
         f"({summary['kept_from_source']} kept from the source), {summary['quarantined']} quarantined. "
         f"Genericity rate {summary['genericity_rate']:.3f}.</p>"),
        "<h2>Quarantine reasons</h2>", table(["reason", "rows"], summary["quarantine_reasons"].items()),
        "<h2>Answer length (words)</h2>",
        table(["mean", "min", "max"], [[_fmt(summary["words"]["mean"]), summary["words"]["min"], summary["words"]["max"]]]),
        table(["words", "answers"], summary["words"]["histogram"].items()),
        "<h2>Aspect coverage per category (share of answers)</h2>",
        *(f"<h3>{html.escape(category)}</h3>" + table(["aspect", "share"], ((a, _fmt(s)) for a, s in shares.items()))
          for category, shares in coverage.items()),
        "<h2>Annotators</h2>",
        table(["annotator", "requests", "failed", "mean words", "contradiction rate"],
              ([name, s["requests"], s["failed"], _fmt(s["mean_words"]), _fmt(s["contradiction_rate"])]
               for name, s in summary["annotators"].items())),
        "<h2>Agreement between annotators</h2>",
        table(["measure", "value"], _agreement_rows(summary["agreement"])),
        f"<h2>Quarantined rows (first {examples})</h2>",
        table(["id", "label", "category", "reason", "answer"],
              quarantine[["id", "label", "category", "reason", "answer"]].head(examples).itertuples(index=False)),
    ]
    return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Annotation report</title>"
            f"<style>{_STYLE}</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n")


def _agreement_rows(agreement: dict[str, Any]) -> list[list[Any]]:
    rows = [["annotators", agreement["annotators"]]]
    if "clue_agreement" in agreement:
        rows.append(["clue agreement (share of clues backed by another annotator)", _fmt(agreement["clue_agreement"])])
        rows += [[f"same verdict: {pair}", _fmt(share)] for pair, share in agreement["verdict_agreement"].items()]
    return rows


def _fmt(value: Any) -> str:
    return "" if value is None else f"{value:.3f}"
