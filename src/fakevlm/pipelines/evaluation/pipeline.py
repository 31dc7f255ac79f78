from kedro.pipeline import Node, Pipeline

from fakevlm.model_card import render_model_card

from .nodes import evaluate, evaluate_baseline, report_evaluation


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                evaluate_baseline,
                ["baseline_model", "validated_manifest", "params:evaluation"],
                "baseline_metrics",
                name="evaluate_baseline",
            ),
            Node(
                evaluate,
                ["fakevlm_model", "validated_manifest", "baseline_metrics", "params:evaluation",
                 "params:training.question", "params:annotation.family_cues"],
                ["predictions", "metrics", "evaluation_mlflow_metrics"],
                name="evaluate",
                tags=["gpu"],  # its step asks the cluster for GPUs (fakevlm.deploy)
            ),
            Node(
                report_evaluation,
                ["predictions", "metrics", "params:evaluation"],
                ["evaluation_report_html", "confusion_plot", "reliability_plot"],
                name="report_evaluation",
            ),
            Node(render_model_card, ["metrics", "params:training", "params:model_card"], "model_card",
                 name="write_model_card"),
        ]
    )
