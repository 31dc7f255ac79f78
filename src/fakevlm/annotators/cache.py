"""The annotator cache: one JSON file per (image sha256, annotator, model, prompt hash).

Calls to a model or an endpoint cost minutes or money, so every answer is stored the moment it
arrives. A file is written to a temporary name and renamed over the final one (`os.replace` is
atomic), so a run killed at any instant leaves whole entries or none, and a rerun reads only
complete ones.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any


class AnnotationCache:
    """Answers on disk under `root`, two hex digits of fan-out per folder."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    @staticmethod
    def key(image_sha256: str, annotator: str, model: str, prompt: str) -> str:
        return hashlib.sha256(f"{image_sha256}\x1f{annotator}\x1f{model}\x1f{prompt}".encode()).hexdigest()

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        path = self._path(key)
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None

    def put(self, key: str, entry: dict[str, Any]) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{key}-", suffix=".tmp")
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as out:
                json.dump(entry, out, sort_keys=True, ensure_ascii=False)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
