from kedro.pipeline import Node, Pipeline

from .nodes import annotate


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [Node(annotate, ["manifest", "params:annotation"], "annotated_manifest", name="annotate")]
    )
