"""The ingestion pipeline: FakeClue-mini on disk, then manifest + quarantine + summary."""

from kedro.pipeline import Node, Pipeline

from .nodes import build_fakeclue_mini, build_manifest


def create_pipeline(**kwargs) -> Pipeline:
    """build_fakeclue_mini -> build_manifest (manifest, ingestion_quarantine, ingestion_summary)."""
    return Pipeline(
        [
            Node(build_fakeclue_mini, "params:ingestion.fakeclue_mini", "fakeclue_mini", name="build_fakeclue_mini"),
            Node(
                build_manifest,
                ["fakeclue_mini", "params:ingestion"],
                ["manifest", "ingestion_quarantine", "ingestion_summary"],
                name="build_manifest",
            ),
        ]
    )
