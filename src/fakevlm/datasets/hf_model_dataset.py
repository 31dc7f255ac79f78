"""Kedro dataset for a trained FakeVLM: a Hugging Face `save_pretrained` folder (safetensors)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset

from fakevlm.model import FakeVLM


class HFModelDataset(AbstractDataset[FakeVLM, FakeVLM]):
    """Saves model and processor into one folder that `from_pretrained` loads as it is."""

    def __init__(self, path: str):
        self._path = Path(path)

    def load(self) -> FakeVLM:
        return FakeVLM.from_pretrained(self._path)

    def save(self, data: FakeVLM) -> None:
        # Write beside the target, then swap: a reader never sees a half-written model.
        self._path.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{self._path.name}-", dir=self._path.parent))
        try:
            data.save_pretrained(staging)
            if self._path.exists():
                shutil.rmtree(self._path)
            staging.rename(self._path)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        data.source_dir = str(self._path)

    def _exists(self) -> bool:
        return (self._path / "config.json").is_file()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}
