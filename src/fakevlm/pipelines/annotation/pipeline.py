from kedro.pipeline import Node, Pipeline

from .nodes import annotate_images, merge_annotations, report_annotations


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(annotate_images,
                 ["manifest", "params:annotation", "params:annotation_prompts", "annotator_credentials"],
                 "annotator_outputs", name="annotate_images"),
            Node(merge_annotations, ["manifest", "annotator_outputs", "params:annotation"],
                 ["annotated_manifest", "annotation_quarantine"], name="merge_annotations"),
            Node(report_annotations,
                 ["annotated_manifest", "annotation_quarantine", "annotator_outputs", "params:annotation",
                  "params:annotation_prompts"],
                 ["annotation_summary", "annotation_report_html", "annotation_mlflow_metrics"],
                 name="report_annotations"),
        ]
    )  # fmt: skip
