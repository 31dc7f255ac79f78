"""Ingestion: build FakeClue-mini, then read every configured source into one manifest."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import pandas as pd

from fakevlm import fakeclue_mini
from fakevlm.formats.fakeclue import MANIFEST_COLUMNS, read_fakeclue

log = logging.getLogger(__name__)

# format name -> reader(annotations, images_root, *, source, split) -> manifest rows
READERS = {"fakeclue": read_fakeclue}
SOURCE_KEYS = ("name", "format", "images", "annotations", "split")


def build_fakeclue_mini(params: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """FakeClue-mini in memory (records + PIL images per split); FakeClueDataset writes it."""
    splits = fakeclue_mini.build(params)
    for split, content in splits.items():
        log.info("FakeClue-mini %s: %d images", split, len(content["records"]))
    return splits


def build_manifest(fakeclue_mini: dict[str, dict[str, str]], params: dict[str, Any]) -> pd.DataFrame:
    """One row per image of every source (columns `MANIFEST_COLUMNS`), sorted by split, then id.

    With no `sources` configured, FakeClue-mini's splits are the sources (one per split, named
    `<fakeclue_mini.name>_<split>`); otherwise only the configured ones are read.
    """
    sources = params.get("sources") or mini_sources(fakeclue_mini, params["fakeclue_mini"]["name"])
    _check_sources(sources)
    frames = [read_source(source) for source in sources]
    manifest = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(MANIFEST_COLUMNS))
    repeated = manifest["id"][manifest["id"].duplicated()]
    if len(repeated):
        raise ValueError(f"manifest ids repeat across sources: {repeated.tolist()[:5]}")
    manifest = manifest.sort_values(["split", "id"], kind="stable").reset_index(drop=True)
    counts = manifest.groupby(["source", "label"]).size().to_dict()
    log.info("manifest: %d rows; per source and label: %s", len(manifest), counts)
    return manifest


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


def read_source(source: Mapping[str, Any]) -> pd.DataFrame:
    """Manifest rows of one configured source, through the reader of its format."""
    reader = READERS.get(source["format"])
    if reader is None:
        raise ValueError(
            f"source {source['name']!r}: unknown format {source['format']!r}; available: {sorted(READERS)}"
        )
    return reader(source["annotations"], source["images"], source=str(source["name"]), split=str(source["split"]))


def _check_sources(sources: list[Mapping[str, Any]]) -> None:
    """Every source has all keys and a unique name (the name prefixes the manifest ids)."""
    names = []
    for position, source in enumerate(sources):
        missing = [key for key in SOURCE_KEYS if key not in source]
        if missing:
            label = source.get("name", f"#{position}")
            raise ValueError(f"ingestion source {label!r}: missing keys {missing}; each needs {list(SOURCE_KEYS)}")
        names.append(source["name"])
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"ingestion sources: names must be unique, repeated: {repeated}")
