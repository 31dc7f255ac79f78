"""Annotation: every image gets a FakeClue-style answer from the configured annotators, merged,
filtered and reported. Rows in = annotated + quarantined."""

from __future__ import annotations

import json
import logging
from typing import Any

import numpy as np
import pandas as pd

from fakevlm.annotators import build_annotator, requests_for, run_cached
from fakevlm.annotators.cache import AnnotationCache
from fakevlm.explanations import clues, contradicts, generic_mask, length_problem, merge
from fakevlm.metrics import flatten_metrics, sentence_encoder

from .report import quality_summary, render_annotation_html

log = logging.getLogger(__name__)


def source_kept(manifest: pd.DataFrame, params: dict[str, Any]) -> pd.Series:
    """Rows whose source's own answer (FakeClue's gpt turn) is kept as it stands."""
    has_source = manifest["reference_answer"].notna() & (manifest["reference_answer"].astype(str).str.len() > 0)
    return has_source & bool(params["keep_source_answers"])


def annotate_images(
    manifest: pd.DataFrame, params: dict[str, Any], prompts: dict[str, Any], credentials: dict[str, Any]
) -> pd.DataFrame:
    """Each configured annotator's answer for every row without a kept source answer, in long form
    (id, annotator, model, prompt_hash, answer, error).

    The one node with I/O outside the catalog: the annotator cache (`cache_dir`). Each answer is
    written the moment it arrives, so a killed run keeps what it paid for; a catalog dataset
    is saved only when the node returns.
    """
    rows = manifest[~source_kept(manifest, params)]
    cache = AnnotationCache(params["cache_dir"])
    frames = []
    for name in params["annotators"]:
        annotator = build_annotator(name, params, prompts, credentials.get("api_key"))
        frames.append(run_cached(annotator, requests_for(rows, annotator, prompts, params["verdict"]), cache))
    return pd.concat(frames, ignore_index=True)


def merge_annotations(
    manifest: pd.DataFrame, annotator_outputs: pd.DataFrame, params: dict[str, Any]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The annotated manifest (answer, annotator, prompt_versions, clue_agreement, explained) and
    the quarantine (the rows that failed, each with its `reason`).

    An image about which the annotators find nothing to say keeps its verdict: its answer is the
    verdict sentence alone and `explained` is false, so it still counts for the verdict (training
    and every benchmark's accuracy) but is no reference for explanation metrics. Dropping it would
    leave the benchmarks without the real images that are hardest to explain."""
    order = list(params["annotators"])
    by_id: dict[str, dict[str, tuple]] = {}
    for output in annotator_outputs.itertuples(index=False):
        by_id.setdefault(output.id, {})[output.annotator] = (output.prompt_hash, output.answer, output.error)
    embeddings = _clue_embeddings(annotator_outputs) if len(order) > 1 else {}
    kept = source_kept(manifest, params)
    records = []
    for row, keep in zip(manifest.itertuples(index=False), kept):
        if keep:
            # a source's own answer is kept as written, unless it says the opposite of its label
            wrong = contradicts(row.reference_answer, row.label)
            records.append((row.reference_answer, "source", "", np.nan, True,
                            f"source answer contradicts the label {row.label!r}" if wrong else None))
        else:
            records.append(_merge_row(row.label, by_id[row.id], order, embeddings, params))
    columns = ["answer", "annotator", "prompt_versions", "clue_agreement", "explained", "reason"]
    out = pd.concat([manifest.reset_index(drop=True), pd.DataFrame(records, columns=columns)], axis=1)
    kept = kept.reset_index(drop=True)
    candidates = out["reason"].isna() & ~kept & out["explained"]
    generic = generic_mask(out.loc[candidates, "answer"].tolist(), **params["filters"]["generic"])
    out.loc[out.index[candidates][generic], "reason"] = "generic: near-identical to many other answers"
    failed = out["reason"].notna()
    annotated = out[~failed].drop(columns="reason").reset_index(drop=True)
    quarantine = out[failed].reset_index(drop=True)
    log.info("annotation: %d rows in, %d annotated (%d kept from the source, %d the verdict alone), %d quarantined %s",
             len(manifest), len(annotated), int(kept.sum()), int((~annotated["explained"].astype(bool)).sum()), len(quarantine),
             quarantine["reason"].map(_reason_kind).value_counts().to_dict())
    return annotated, quarantine


def _merge_row(label: str, outputs: dict[str, tuple], order: list[str], embeddings: dict, params: dict[str, Any]):
    """(answer, annotators, prompt versions, clue agreement, explained, quarantine reason or None) of
    one row; `outputs` maps annotator -> (prompt hash, answer, error). No clue left: the verdict alone."""
    versions = ";".join(f"{name}:{outputs[name][0]}" for name in order)
    failed = [f"{name}: {outputs[name][2]}" for name in order if isinstance(outputs[name][2], str)]
    if failed:
        return None, "+".join(order), versions, np.nan, False, "annotator failed: " + "; ".join(failed)
    usable = [name for name in order if not contradicts(outputs[name][1], label)]
    if not usable:
        return None, "+".join(order), versions, np.nan, False, f"contradicts the label {label!r}: {', '.join(order)}"
    merged = merge(params["verdict"][label], [outputs[name][1] for name in usable], embeddings, params["merge"],
                   [name in params["merge"]["trusted"] for name in usable])
    annotators = "+".join(usable)
    if merged.answer is None:
        return params["verdict"][label], annotators, versions, merged.agreement, False, None
    return (merged.answer, annotators, versions, merged.agreement, True,
            length_problem(merged.answer, params["filters"]["words"]))


def _clue_embeddings(annotator_outputs: pd.DataFrame) -> dict[str, np.ndarray]:
    """Unit MiniLM vectors of every distinct clue in the run (each encoded once)."""
    texts = sorted({c for answer in annotator_outputs["answer"].dropna() for c in clues(answer)})
    if not texts:
        return {}
    vectors = sentence_encoder().encode(texts, batch_size=64, convert_to_numpy=True,
                                        normalize_embeddings=True, show_progress_bar=False)
    return dict(zip(texts, vectors))


def _reason_kind(reason: str) -> str:
    return reason.split(":")[0]


def report_annotations(
    annotated: pd.DataFrame, quarantine: pd.DataFrame, annotator_outputs: pd.DataFrame,
    params: dict[str, Any], prompts: dict[str, Any],
) -> tuple[dict[str, Any], str, dict[str, Any]]:
    """The run's quality summary, its HTML page and its MLflow metrics."""
    summary = quality_summary(annotated, quarantine, annotator_outputs, params, prompts)
    page = render_annotation_html(summary, quarantine, params["report"]["examples"])
    numbers = {k: {"value": v, "step": 0} for k, v in flatten_metrics(summary).items()}
    log.info("annotation summary: %s", json.dumps({k: summary[k] for k in ("rows_in", "annotated", "quarantined")}))
    return summary, page, numbers
