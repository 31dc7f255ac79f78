"""Kedro hooks of the project."""

from __future__ import annotations

import logging

import mlflow
from kedro.framework.hooks import hook_impl

log = logging.getLogger(__name__)

REPORTS = ("metrics", "validation_report", "registry_decision")


class ResultLocationsHook:
    """After a run, say where its results are: the reports it wrote and the MLflow store."""

    @hook_impl
    def after_pipeline_run(self, run_params, pipeline, catalog) -> None:
        for name in REPORTS:
            if name in pipeline.all_outputs():
                log.info("%s: %s", name, catalog.get(name)._describe().get("filepath"))
        uri = mlflow.get_tracking_uri()
        log.info("MLflow store: %s  (view: mlflow ui --backend-store-uri %s --host 127.0.0.1)", uri, uri)
