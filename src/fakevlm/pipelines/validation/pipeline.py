"""Validation pipeline: check the annotated manifest, then gate what goes on to training."""

from kedro.pipeline import Node, Pipeline

from .nodes import check_manifest, enforce_gate


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(check_manifest, ["annotated_manifest", "params:validation"], ["validation_report", "quarantine"],
                 name="check_manifest"),
            Node(enforce_gate, ["annotated_manifest", "validation_report", "params:validation"], "validated_manifest",
                 name="enforce_gate"),
        ]
    )
