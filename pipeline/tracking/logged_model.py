"""The MLflow side of a run's model: logging a pyfunc model as an MLflow 3 LoggedModel of the run (optionally
registered as a new version of a registered model), and resolving a model URI back to its run.

The model is logged with ``mlflow.models.Model.log`` and an explicit ``run_id``: the run is owned by
``RunIdentity`` and must not become MLflow's fluent "active run" (ending that would end the job's run).
The run's metrics at ``step`` are linked to the model by MLflow itself (the model page shows them).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow
from mlflow.models import Model, ModelSignature
from mlflow.models.model import ModelInfo
from mlflow.tracking import MlflowClient

from pipeline.tracking.retry import with_retries

log = logging.getLogger(__name__)

MODEL_NAME = "model"  # runs:/<run id>/model
PACKAGE = "alexnet-pipeline"
# What the pyfunc needs at load time, pinned to what logged it (MLflow would otherwise infer them by loading
# the model in a subprocess, which costs seconds and guesses).
_REQUIREMENTS = (PACKAGE, "torch", "torchvision", "mlflow", "pillow", "numpy", "pandas")


def pip_requirements() -> list[str]:
    pins = []
    for name in _REQUIREMENTS:
        try:
            pins.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            pins.append(name)
    return pins


def log_pyfunc_model(
    *,
    tracking_uri: str,
    run_id: str,
    code_path: Path,
    artifacts: Mapping[str, str],
    signature: ModelSignature,
    input_example: Any,
    params: Mapping[str, Any],
    step: int,
    registered_model_name: str | None = None,
    requirements: Sequence[str] | None = None,
) -> ModelInfo:
    """Logs the model from code into run ``run_id`` as ``runs:/<run_id>/model`` (a LoggedModel with the given
    params, the run's metrics at ``step`` linked) and registers it as a new version of
    ``registered_model_name`` if given. Raises after the retries fail: a job must not end as if it had."""
    mlflow.set_tracking_uri(tracking_uri)  # Model.log resolves the store from MLflow's global URI
    experiment_id = MlflowClient(tracking_uri).get_run(run_id).info.experiment_id

    # Created first in the run's own experiment (Model.log alone would put it in the fluent experiment), once:
    # a retried upload then fills the same LoggedModel instead of leaving a pending one behind per attempt.
    model = with_retries(
        lambda: mlflow.initialize_logged_model(
            name=MODEL_NAME,
            source_run_id=run_id,
            params={key: str(value) for key, value in params.items()},
            model_type="image-classifier",
            experiment_id=experiment_id,
        ),
        f"creating the logged model of MLflow run {run_id}",
    )
    info = with_retries(
        lambda: Model.log(
            artifact_path=None,
            name=MODEL_NAME,
            flavor=mlflow.pyfunc,
            run_id=run_id,
            model_id=model.model_id,
            python_model=str(code_path),
            artifacts=dict(artifacts),
            signature=signature,
            input_example=input_example,
            step=step,
            pip_requirements=list(requirements or pip_requirements()),
        ),
        f"logging the model into MLflow run {run_id}",
    )
    if registered_model_name is not None:  # retried on its own: a failed registration never logs it twice
        version = with_retries(
            lambda: mlflow.register_model(info.model_uri, registered_model_name),
            f"registering {info.model_uri} as {registered_model_name}",
        )
        info.registered_model_version = int(version.version)
    return info


def check_model_name(name: str) -> None:
    """The registry's rule for names, checked before training rather than after it."""
    if not name.strip() or any(c in name for c in "/:"):
        raise ValueError(
            f"logger.register_model={name!r}: a registered model name, not empty, without '/' or ':'"
        )


def source_run_of(model_uri: str) -> str | None:
    """The training run a logged model (``runs:/``, ``models:/``, ``models:/m-...``) came from."""
    return mlflow.models.get_model_info(model_uri).run_id


def load_python_model(model_uri: str) -> Any:
    """The logged model's Python object (``AlexNetClassifier``, loaded: its ``net`` and ``card``)."""
    return mlflow.pyfunc.load_model(model_uri).unwrap_python_model()
