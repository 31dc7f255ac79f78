"""Kedro dataset for a trained model saved as a Hugging Face-style `save_pretrained` folder
(safetensors): FakeVLM, or any class with `save_pretrained` / `from_pretrained` (`model_class`)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset
from kedro.utils import load_obj


class HFModelDataset(AbstractDataset[Any, Any]):
    """Saves a model (and its processor) into one folder that `from_pretrained` loads as it is."""

    def __init__(self, path: str, model_class: str = "fakevlm.model.FakeVLM"):
        self._path = Path(path)
        self._model_class = model_class

    def load(self) -> Any:
        return load_obj(self._model_class).from_pretrained(self._path)

    def save(self, data: Any) -> None:
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
        if hasattr(data, "source_dir"):
            data.source_dir = str(self._path)

    def _exists(self) -> bool:
        return (self._path / "config.json").is_file()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path), "model_class": self._model_class}
