"""Annotation: every image gets its FakeClue-style answer."""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd

from fakevlm.explanations import grounded_answer

log = logging.getLogger(__name__)


def annotate(manifest: pd.DataFrame, params: dict[str, Any]) -> pd.DataFrame:
    """Add `answer` and `annotator` to each row.

    A source's own answer is kept when `keep_source_answers` is set (FakeClue ships them);
    every other row is written by the grounded annotator from the record's artifact facts.
    """
    if params["annotator"] != "grounded":
        raise ValueError(f"unknown annotator {params['annotator']!r}; available: grounded")
    annotated = manifest.copy()
    written = [
        grounded_answer(
            row.label,
            row.category,
            row.artifact_family if isinstance(row.artifact_family, str) else None,
            row.artifact_region if isinstance(row.artifact_region, str) else None,
            None if pd.isna(row.artifact_strength) else float(row.artifact_strength),
            params,
        )
        for row in manifest.itertuples(index=False)
    ]
    has_source = manifest["reference_answer"].notna() & (manifest["reference_answer"].astype(str).str.len() > 0)
    keep = has_source if params["keep_source_answers"] else pd.Series(False, index=manifest.index)
    annotated["answer"] = manifest["reference_answer"].where(keep, pd.Series(written, index=manifest.index))
    annotated["annotator"] = keep.map({True: "source", False: "grounded"})
    log.info("annotated %d rows (%d kept from the source)", len(annotated), int(keep.sum()))
    return annotated
