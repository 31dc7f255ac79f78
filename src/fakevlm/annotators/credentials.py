"""The annotator's API credentials as a catalog dataset.

Kedro hands credentials (conf/local/credentials.yml) only to datasets, so this read-only dataset
passes them to the annotation node. Without a `credentials:` key in its catalog entry it loads an
empty dict and the `openai` annotator reads the environment variable its spec names.
"""

from __future__ import annotations

from typing import Any

from kedro.io import AbstractDataset, DatasetError


class AnnotatorCredentials(AbstractDataset[None, dict[str, Any]]):
    def __init__(self, credentials: dict[str, Any] | None = None):
        self._credentials = dict(credentials or {})

    def load(self) -> dict[str, Any]:
        return dict(self._credentials)

    def save(self, data: None) -> None:
        raise DatasetError("annotator credentials are read-only")

    def _describe(self) -> dict[str, Any]:
        return {"keys": sorted(self._credentials)}  # never the secrets themselves
