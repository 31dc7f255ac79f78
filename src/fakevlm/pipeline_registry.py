"""Project pipelines."""

from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline

STAGES = ("ingestion", "annotation", "validation", "training", "evaluation", "registry")


def register_pipelines() -> dict[str, Pipeline]:
    pipelines = find_pipelines(raise_errors=True)
    # `kedro run --pipelines X` makes Kedro discover only X; the default chain needs them all
    if all(name in pipelines for name in STAGES):
        pipelines["__default__"] = sum((pipelines[name] for name in STAGES), Pipeline([]))
    return pipelines
