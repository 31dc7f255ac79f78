"""The ingestion stage: FakeClue-mini and configured FakeClue-format sources -> one manifest."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
