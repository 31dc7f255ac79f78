"""Validation pipeline: check the annotated manifest, report, then gate what goes on to training."""

from kedro.pipeline import Node, Pipeline

from .nodes import check_manifest, enforce_gate, report_validation


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(check_manifest, ["annotated_manifest", "params:validation"], ["validation_report", "quarantine"],
                 name="check_manifest"),
            # Before the gate (which reads the summary), so the summary and the page exist when it fails.
            Node(report_validation, ["validation_report", "quarantine"],
                 ["validation_summary", "validation_report_html"], name="report_validation"),
            Node(enforce_gate, ["annotated_manifest", "validation_report", "validation_summary", "params:validation"],
                 "validated_manifest", name="enforce_gate"),
        ]
    )
