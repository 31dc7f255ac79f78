"""Kedro hooks of the project."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import mlflow
from kedro.framework.hooks import hook_impl

log = logging.getLogger(__name__)

REPORTS = ("metrics", "validation_report", "registry_decision")


class EvaluatedModelHook:
    """`--params evaluation.model=FOLDER_OR_ID`: the evaluation and registry stages take that
    checkpoint (e.g. FakeVLM's released weights, a llava-hf folder) instead of the one training
    saved; registered, it becomes the challenger like any trained version."""

    @hook_impl
    def before_pipeline_run(self, run_params, pipeline, catalog) -> None:
        from fakevlm.datasets.hf_model_dataset import HFModelDataset

        model = (catalog.load("params:evaluation") or {}).get("model")
        if not model:
            return
        if any(node.name == "train_fakevlm" for node in pipeline.nodes):
            raise ValueError(f"evaluation.model={model}: training would save over the model it evaluates; "
                             "run only the later stages: --pipelines evaluation,registry")
        log.info("evaluating the given checkpoint %s instead of the trained model", model)
        catalog["fakevlm_model"] = HFModelDataset(path=str(model))


class ResultLocationsHook:
    """After a run, say where its results are: the reports it wrote and the MLflow store."""

    @hook_impl
    def after_pipeline_run(self, run_params, pipeline, catalog) -> None:
        for name in REPORTS:
            if name in pipeline.all_outputs():
                log.info("%s: %s", name, catalog.get(name)._describe().get("filepath"))
        uri = mlflow.get_tracking_uri()
        log.info("MLflow store: %s  (view: mlflow ui --backend-store-uri %s --host 127.0.0.1)", uri, uri)


def file_md5(path: Path) -> str:
    """The md5 DVC records for a file (its content's md5), so a run names the data it used."""
    digest = hashlib.md5()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class TrainingProvenanceHook:
    """Before training, tag the MLflow run with the training data's DVC md5 and log the
    DeepSpeed configs of the stages (kedro-mlflow logs the parameters, not the files they name)."""

    @hook_impl
    def before_node_run(self, node, catalog, inputs) -> None:
        if node.name != "train_fakevlm" or mlflow.active_run() is None:
            return
        manifest = Path(str(catalog.get("validated_manifest")._describe()["filepath"]))
        if manifest.is_file():
            mlflow.set_tag("data.validated_manifest.md5", file_md5(manifest))
        for stage, args in inputs["params:training"]["stages"].items():
            if args.get("deepspeed"):
                mlflow.log_artifact(args["deepspeed"], artifact_path=f"deepspeed/{stage}")
