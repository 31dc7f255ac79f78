"""The validation stage."""

from .pipeline import create_pipeline  # Kedro's find_pipelines looks for it on the package

__all__ = ["create_pipeline"]
