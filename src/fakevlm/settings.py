"""Kedro project settings."""

from kedro.config import OmegaConfigLoader

from fakevlm.hooks import EvaluatedModelHook, ResultLocationsHook, TrainingProvenanceHook
from omegaconf.resolvers import oc

# kedro-mlflow's MlflowHook registers itself through its plugin entry point; listing it here too
# made every `kedro run` start two MLflow runs and split its logs between them.
HOOKS = (TrainingProvenanceHook(), EvaluatedModelHook(), ResultLocationsHook())

CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    # mlflow.yml reads MLFLOW_TRACKING_URI so a team server replaces the embedded SQLite store.
    "custom_resolvers": {"oc.env": oc.env},
    # an environment (conf/gpu, conf/local) states only the keys it changes
    "merge_strategy": {"parameters": "soft"},
}
