"""The cross-generator grid (not in the default run): train on one generator, test on every one."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
