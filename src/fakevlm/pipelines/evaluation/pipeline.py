from kedro.pipeline import Node, Pipeline

from .nodes import evaluate


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                evaluate,
                ["fakevlm_model", "validated_manifest", "params:evaluation", "params:training.question"],
                ["predictions", "metrics", "evaluation_mlflow_metrics"],
                name="evaluate",
            )
        ]
    )
