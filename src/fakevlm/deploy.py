"""Orchestrator specs generated from the pipeline registry: Argo Workflows and Kubeflow Pipelines.

A step runs `kedro run --pipelines STAGE --env ENV` (or one node: `--nodes NODE`) in the project's
image; a step follows the steps that write the datasets it reads. Steps whose nodes are tagged
`gpu` ask for GPUs. Every step mounts one data volume on the image's data folder, and logs to one
MLflow run: the workflow's first step (`fakevlm deploy mlflow-run`) creates it, and each step
joins it through MLFLOW_RUN_ID, which MLflow's start_run (so kedro-mlflow's) resumes, and keeps
its name through MLFLOW_RUN_NAME.
"""

# no `from __future__ import annotations`: KFP reads the components' annotations as types
import tempfile
from pathlib import Path
from typing import Any, NamedTuple

import yaml

GPU_TAG = "gpu"
MLFLOW_RUN_STEP = "mlflow-run"
# What `kedro run` names its run (the pipeline's name); each step keeps it (conf/base/mlflow.yml)
RUN_NAME = "__default__"


class Step(NamedTuple):
    name: str
    kedro_args: list[str]      # after `kedro run`, --env excepted
    dependencies: list[str]   # the steps that write what this one reads
    gpus: int


def load_config(project: Path, env: str, key: str) -> dict[str, Any]:
    """conf/base merged with conf/<env>, as `kedro run --env env` reads it: "parameters" or "mlflow"."""
    from kedro.config import OmegaConfigLoader
    from omegaconf.resolvers import oc

    loader = OmegaConfigLoader(str(project / "conf"), base_env="base", default_run_env=env,
                               config_patterns={"mlflow": ["mlflow*", "mlflow*/**"]},
                               custom_resolvers={"oc.env": oc.env}, merge_strategy={"parameters": "soft"})
    return loader[key]


def steps(project: Path, env: str, by: str = "stage") -> list[Step]:
    """One step per stage of the default pipeline (by="stage") or per node (by="node"), in order."""
    from kedro.framework.project import pipelines
    from kedro.framework.startup import bootstrap_project

    from fakevlm.pipeline_registry import STAGES

    bootstrap_project(project)
    gpus = int(load_config(project, env, "parameters")["training"]["launcher"]["nproc_per_node"])
    units = []   # (name, kedro args, kedro pipeline)
    for stage in STAGES:
        if by == "stage":
            units.append((stage, ["--pipelines", stage], pipelines[stage]))
        elif by == "node":
            units += [(f"{stage}-{node.name}".replace("_", "-"), ["--pipelines", stage, "--nodes", node.name],
                       pipelines[stage].only_nodes(node.name)) for node in pipelines[stage].nodes]
        else:
            raise ValueError(f"by: {by!r} is neither stage nor node")
    writers = {dataset: name for name, _, pipeline in units for dataset in pipeline.all_outputs()}
    return [Step(name, args,
                 sorted({writers[dataset] for dataset in pipeline.inputs() if dataset in writers},
                        key=[unit[0] for unit in units].index),
                 gpus if any(GPU_TAG in node.tags for node in pipeline.nodes) else 0)
            for name, args, pipeline in units]


def argo_workflow(project: Path, env: str, by: str = "stage") -> dict[str, Any]:
    """An Argo Workflow: a DAG of the steps, the image and the MLflow server as workflow parameters."""
    deploy = load_config(project, env, "parameters")["deploy"]
    environment = [{"name": "MLFLOW_TRACKING_URI", "value": "{{workflow.parameters.mlflow-tracking-uri}}"},
                   {"name": "MLFLOW_RUN_NAME", "value": RUN_NAME}]
    mounts = [{"name": "data", "mountPath": deploy["data_mount_path"]}]
    run_id_file = "/tmp/mlflow-run-id"
    templates = [{
        "name": MLFLOW_RUN_STEP,
        "container": {"image": "{{workflow.parameters.image}}",
                      "command": ["fakevlm", "deploy", "mlflow-run", "--env", env, "--output", run_id_file],
                      "env": environment},
        "outputs": {"parameters": [{"name": "run-id", "valueFrom": {"path": run_id_file}}]},
    }]
    tasks = [{"name": MLFLOW_RUN_STEP, "template": MLFLOW_RUN_STEP}]
    for step in steps(project, env, by):
        container = {
            "image": "{{workflow.parameters.image}}",
            "command": ["kedro", "run", *step.kedro_args, "--env", env],
            "env": [*environment, {"name": "MLFLOW_RUN_ID", "value": "{{inputs.parameters.mlflow-run-id}}"}],
            "volumeMounts": mounts,
        }
        if step.gpus:
            container["resources"] = {"limits": {deploy["gpu_resource"]: str(step.gpus)}}
        templates.append({"name": step.name, "inputs": {"parameters": [{"name": "mlflow-run-id"}]},
                          "container": container})
        tasks.append({"name": step.name, "template": step.name, "dependencies": [MLFLOW_RUN_STEP, *step.dependencies],
                      "arguments": {"parameters": [{"name": "mlflow-run-id",
                                                    "value": f"{{{{tasks.{MLFLOW_RUN_STEP}.outputs.parameters.run-id}}}}"}]}})
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Workflow",
        "metadata": {"generateName": "fakevlm-"},
        "spec": {
            "entrypoint": "fakevlm",
            "arguments": {"parameters": [{"name": "image", "value": deploy["image"]},
                                         {"name": "mlflow-tracking-uri", "value": deploy["mlflow_tracking_uri"]}]},
            "volumeClaimTemplates": [{"metadata": {"name": "data"},
                                      "spec": {"accessModes": ["ReadWriteOnce"],
                                               "resources": {"requests": {"storage": deploy["data_volume_size"]}}}}],
            "templates": [{"name": "fakevlm", "dag": {"tasks": tasks}}, *templates],
        },
    }


def kfp_pipeline(project: Path, env: str, by: str = "stage"):
    """A Kubeflow pipeline of the steps (the image fixed, the MLflow server and the data PVC as parameters)."""
    from kfp import dsl, kubernetes

    deploy = load_config(project, env, "parameters")["deploy"]
    image = deploy["image"]
    project_steps = steps(project, env, by)

    @dsl.container_component
    def mlflow_run(mlflow_tracking_uri: str, run_id: dsl.OutputPath(str)):
        return dsl.ContainerSpec(image=image, command=[
            "env", dsl.ConcatPlaceholder(["MLFLOW_TRACKING_URI=", mlflow_tracking_uri]), f"MLFLOW_RUN_NAME={RUN_NAME}",
            "fakevlm", "deploy", "mlflow-run", "--env", env, "--output", run_id])

    def kedro_run(step: Step):
        def component(mlflow_tracking_uri: str, mlflow_run_id: str):
            return dsl.ContainerSpec(image=image, command=[
                "env", dsl.ConcatPlaceholder(["MLFLOW_TRACKING_URI=", mlflow_tracking_uri]), f"MLFLOW_RUN_NAME={RUN_NAME}",
                dsl.ConcatPlaceholder(["MLFLOW_RUN_ID=", mlflow_run_id]),
                "kedro", "run", *step.kedro_args, "--env", env])

        component.__name__ = step.name.replace("-", "_")   # the component's name in the spec
        return dsl.container_component(component)

    @dsl.pipeline(name="fakevlm", description=f"The Kedro pipelines of fakevlm, a step per {by}, --env {env}")
    def fakevlm(mlflow_tracking_uri: str = deploy["mlflow_tracking_uri"], data_pvc: str = deploy["data_volume"]):
        run = mlflow_run(mlflow_tracking_uri=mlflow_tracking_uri).set_display_name(MLFLOW_RUN_STEP)
        run.set_caching_options(False)
        tasks = {}
        for step in project_steps:
            task = kedro_run(step)(mlflow_tracking_uri=mlflow_tracking_uri, mlflow_run_id=run.output)
            task.set_display_name(step.name)
            task.set_caching_options(False)   # a step's outputs are files on the volume, not KFP artifacts
            task.after(*(tasks[name] for name in step.dependencies))
            kubernetes.mount_pvc(task, pvc_name=data_pvc, mount_path=deploy["data_mount_path"])
            if step.gpus:
                task.set_accelerator_type(deploy["gpu_resource"]).set_accelerator_limit(str(step.gpus))
            tasks[step.name] = task

    return fakevlm


class _NoAliases(yaml.SafeDumper):
    def ignore_aliases(self, data) -> bool:   # a spec that spells every step out, as Argo's users read them
        return True


def argo_yaml(project: Path, env: str, by: str = "stage") -> str:
    return yaml.dump(argo_workflow(project, env, by), Dumper=_NoAliases, sort_keys=False, width=120)


def kfp_yaml(project: Path, env: str, by: str = "stage") -> str:
    from kfp import compiler

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "pipeline.yaml"
        compiler.Compiler().compile(kfp_pipeline(project, env, by), str(path))
        return path.read_text()


def start_mlflow_run(project: Path, env: str) -> str:
    """The workflow's MLflow run, in the experiment `kedro run` logs to; its id."""
    import mlflow

    config = load_config(project, env, "mlflow")
    mlflow.set_tracking_uri(config["server"]["mlflow_tracking_uri"])
    name = config["tracking"]["experiment"]["name"]
    # created as a server makes it (artifacts proxied), not at the local artifact_location of mlflow.yml
    experiment = mlflow.get_experiment_by_name(name) or mlflow.get_experiment(mlflow.create_experiment(name))
    run = mlflow.MlflowClient().create_run(experiment.experiment_id, run_name=RUN_NAME,
                                           tags={"fakevlm.workflow": "true", "kedro.env": env})
    return run.info.run_id
