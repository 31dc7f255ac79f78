"""Kedro dataset for a data set in FakeClue's layout: `data_json/{split}.json` + `{split}/...` images."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset

from fakevlm.formats.common import project_relative
from fakevlm.formats.fakeclue import split_paths, write_fakeclue_split

# save(): {split: {"records": [FakeClue record, ...], "images": {record image path: PIL image}}}
# load(): {split: {"images_root": str, "annotations": str}}; the next node reads through the format
# reader, so loading never decodes thousands of images that a node may not need.
SavedSplits = dict[str, dict[str, Any]]
LoadedSplits = dict[str, dict[str, str]]


class FakeClueDataset(AbstractDataset[SavedSplits, LoadedSplits]):
    """A folder in FakeClue's layout, written all at once: readers never see half a data set."""

    def __init__(self, path: str):
        self._path = Path(path)

    def load(self) -> LoadedSplits:
        ann_dir = self._path / "data_json"
        if not ann_dir.is_dir():
            raise FileNotFoundError(f"{ann_dir}: no FakeClue annotations here (run ingestion first)")
        splits = sorted(p.stem for p in ann_dir.glob("*.json"))
        # Kedro hands datasets absolute paths; the manifest must not depend on the clone's folder
        return {split: split_paths(project_relative(self._path), split) for split in splits}

    def save(self, data: SavedSplits) -> None:
        # Write into a sibling temp folder, then swap it in: a crash leaves the old data intact,
        # and files of an earlier, larger save cannot survive into the new one.
        self._path.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{self._path.name}-new-", dir=self._path.parent))
        retired = self._path.parent / staging.name.replace("-new-", "-old-")
        try:
            for split, content in sorted(data.items()):
                write_fakeclue_split(staging, split, content["records"], content["images"])
            if self._path.exists():
                self._path.rename(retired)
            try:
                staging.rename(self._path)
            except BaseException:
                if retired.exists():  # put the previous data set back
                    retired.rename(self._path)
                raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            shutil.rmtree(retired, ignore_errors=True)

    def _exists(self) -> bool:
        return (self._path / "data_json").is_dir()

    def _describe(self) -> dict[str, Any]:
        return {"path": self._path.as_posix()}
