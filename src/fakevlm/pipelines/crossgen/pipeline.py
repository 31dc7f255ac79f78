from kedro.pipeline import Node, Pipeline

from .nodes import cross_generator_grid, grid_heatmap


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(cross_generator_grid,
                 ["validated_manifest", "params:crossgen", "params:baseline", "params:training", "params:evaluation"],
                 ["crossgen_grid", "crossgen_mlflow_metrics"], name="cross_generator_grid"),
            Node(grid_heatmap, "crossgen_grid", "crossgen_heatmap", name="crossgen_heatmap"),
        ]
    )  # fmt: skip
