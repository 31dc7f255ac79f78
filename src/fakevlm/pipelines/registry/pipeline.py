from kedro.pipeline import Node, Pipeline

from .nodes import register_model


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                register_model,
                ["fakevlm_model", "metrics", "validated_manifest", "params:registry", "params:evaluation",
                 "model_card"],
                "registry_decision",
                name="register_model",
            )
        ]
    )
