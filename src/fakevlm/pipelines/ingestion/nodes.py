"""Ingestion: build FakeClue-mini, then read every configured source into one manifest.

Nothing is lost: each input item (annotation record, image of a record, folder file, unsafe archive
member) becomes a manifest row or a quarantine row, and the summary counts both.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from typing import Any

import pandas as pd

from fakevlm import fakeclue_mini
from fakevlm.formats import READERS
from fakevlm.formats.common import (
    DEFAULT_WORKERS,
    MANIFEST_COLUMNS,
    QUARANTINE_COLUMNS,
    UnreadableFile,
    manifest_frame,
    reason_kind,
    unreadable,
)

log = logging.getLogger(__name__)

BUILTIN = "builtin"  # FakeClue-mini, the offline default: the source used when none is configured
SOURCE_KEYS = ("name", "format")  # every source; each format adds its own (formats.READERS)


def build_fakeclue_mini(params: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """FakeClue-mini in memory (records + PIL images per split); FakeClueDataset writes it."""
    splits = fakeclue_mini.build(params)
    for split, content in splits.items():
        log.info("FakeClue-mini %s: %d images", split, len(content["records"]))
    return splits


def build_manifest(
    fakeclue_mini: dict[str, dict[str, str]], params: dict[str, Any]
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """(manifest, quarantine, summary) of every configured source.

    manifest: one row per accepted image (columns `MANIFEST_COLUMNS`), sorted by split, then id.
    quarantine: one row per rejected item (columns `QUARANTINE_COLUMNS`), in source order.
    summary: records_in, accepted, quarantined, by_reason (reason kind -> count), per_source.
    With no `sources` configured, FakeClue-mini is the one source (format `builtin`).
    """
    configured = params.get("sources") or [{"name": params["fakeclue_mini"]["name"], "format": BUILTIN}]
    defaults = params.get("format_defaults") or {}
    sources = [with_defaults(source, defaults) for source in expand_builtin(configured, fakeclue_mini)]
    _check_sources(sources)
    workers = int(params.get("workers", DEFAULT_WORKERS))
    results = {str(source["name"]): read_source({"workers": workers, **source}) for source in sources}
    frames = [rows for rows, _ in results.values()]
    manifest = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(MANIFEST_COLUMNS))
    repeated = manifest["id"][manifest["id"].duplicated()]
    if len(repeated):
        raise ValueError(f"manifest ids repeat across sources: {repeated.tolist()[:5]}")
    manifest = manifest.sort_values(["split", "id"], kind="stable").reset_index(drop=True)
    rejects = [row for _, source_rejects in results.values() for row in source_rejects]
    quarantine = pd.DataFrame(rejects, columns=list(QUARANTINE_COLUMNS)).astype("str")
    summary = summarise(results)
    log.info("manifest: %d rows, quarantined %d; by reason: %s", len(manifest), len(quarantine), summary["by_reason"])
    return manifest, quarantine, summary


def summarise(results: Mapping[str, tuple[pd.DataFrame, list[dict[str, str]]]]) -> dict[str, Any]:
    """Counts of the ingestion summary, overall and per source; records_in = accepted + quarantined."""
    per_source = {name: _counts(len(rows), rejects) for name, (rows, rejects) in results.items()}
    summary = _counts(sum(len(rows) for rows, _ in results.values()),
                      [row for _, rejects in results.values() for row in rejects])
    assert summary["records_in"] == summary["accepted"] + summary["quarantined"]
    return {**summary, "per_source": per_source}


def _counts(accepted: int, rejects: list[dict[str, str]]) -> dict[str, Any]:
    """records_in, accepted, quarantined and by_reason of some rows and rejects."""
    by_reason = Counter(reason_kind(row["reason"]) for row in rejects)
    return {"records_in": accepted + len(rejects), "accepted": accepted, "quarantined": len(rejects),
            "by_reason": dict(sorted(by_reason.items()))}


def expand_builtin(sources: list[Mapping[str, Any]], loaded: Mapping[str, Mapping[str, str]]) -> list[Mapping[str, Any]]:
    """Sources with each `builtin` entry replaced by FakeClue-mini's splits (optionally only `split`)."""
    expanded: list[Mapping[str, Any]] = []
    for source in sources:
        if source.get("format") != BUILTIN:
            expanded.append(source)
            continue
        splits = {k: v for k, v in loaded.items() if source.get("split") in (None, k)}
        extra = {k: v for k, v in source.items() if k not in ("name", "format", "split")}
        expanded += [{**extra, **entry} for entry in mini_sources(splits, str(source.get("name", "fakeclue_mini")))]
    return expanded


def mini_sources(loaded: Mapping[str, Mapping[str, str]], name: str) -> list[dict[str, str]]:
    """Source entries for FakeClue-mini's splits, from the paths FakeClueDataset.load() gave."""
    return [
        {
            "name": f"{name}_{split}",
            "format": "fakeclue",
            "images": paths["images_root"],
            "annotations": paths["annotations"],
            "split": split,
        }
        for split, paths in sorted(loaded.items())
    ]


def with_defaults(source: Mapping[str, Any], defaults: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """A source over its format's defaults; a mapping in both (LOKI's categories) merges key by key,
    so a source maps one more category without repeating the others."""
    base = defaults.get(source.get("format"), {}) or {}
    merged = {key: {**value, **source[key]} for key, value in base.items()
              if isinstance(value, Mapping) and isinstance(source.get(key), Mapping)}
    return {**base, **source, **merged}


def read_source(source: Mapping[str, Any]) -> tuple[pd.DataFrame, list[dict[str, str]]]:
    """Manifest rows and rejects of one configured source, through the reader of its format.

    An annotation file that cannot be read at all does not stop the run: it is one reject (reason
    `unreadable_file`, naming the file and why) and the source gives no rows.
    """
    reader, _ = READERS[source["format"]]
    try:
        rows, rejects = reader(source)
    except UnreadableFile as err:
        log.error("source %s: %s", source["name"], err)
        rows, rejects = manifest_frame([]), [unreadable(str(source["name"]), err)]
    log.info("source %s: %d accepted, %d quarantined", source["name"], len(rows), len(rejects))
    return rows, rejects


def _check_sources(sources: list[Mapping[str, Any]]) -> None:
    """Every source has a known format, the keys it needs and a unique name (it prefixes the ids)."""
    names = []
    for position, source in enumerate(sources):
        label = source.get("name", f"#{position}")
        if source.get("format") not in READERS:
            raise ValueError(f"source {label!r}: unknown format {source.get('format')!r}; "
                             f"available: {sorted([*READERS, BUILTIN])}")
        needed = [*SOURCE_KEYS, *READERS[source["format"]][1]]
        missing = [key for key in needed if key not in source]
        if missing:
            raise ValueError(f"ingestion source {label!r}: missing keys {missing}; format {source['format']!r} "
                             f"needs {needed}")
        names.append(source["name"])
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"ingestion sources: names must be unique, repeated: {repeated}")
