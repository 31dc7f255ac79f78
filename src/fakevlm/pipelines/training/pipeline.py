from kedro.pipeline import Node, Pipeline

from .nodes import train_baseline, train_fakevlm


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                train_fakevlm,
                ["validated_manifest", "params:training"],
                ["fakevlm_model", "training_history", "training_mlflow_metrics"],
                name="train_fakevlm",
                tags=["gpu"],  # its step asks the cluster for GPUs (fakevlm.deploy)
            ),
            Node(
                train_baseline,
                ["validated_manifest", "params:baseline", "params:training.train_split"],
                ["baseline_model", "baseline_history", "baseline_mlflow_metrics"],
                name="train_baseline",
            ),
        ]
    )
