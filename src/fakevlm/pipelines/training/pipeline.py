from kedro.pipeline import Node, Pipeline

from .nodes import train_fakevlm


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                train_fakevlm,
                ["validated_manifest", "params:training"],
                ["fakevlm_model", "training_history", "training_mlflow_metrics"],
                name="train_fakevlm",
            )
        ]
    )
