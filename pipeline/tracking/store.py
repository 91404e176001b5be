"""The MLflow store: where it is, whether it answers, experiments, and creating, reopening and ending runs."""

from __future__ import annotations

import getpass
import os
import socket
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alexnet_common.redact import redact_text, redact_uri
from pipeline.tracking import keys

if TYPE_CHECKING:  # MLflow loads where used: the CLI's config errors stay fast
    from mlflow.tracking import MlflowClient

REACHABILITY_TIMEOUT_S = 5.0
_PARAMS_PER_BATCH = 100
_PARAM_VALUE_LIMIT = 6000


def resolve_tracking_uri(configured: str | None, *, must_exist: bool = False) -> str:
    """``configured``, else ``MLFLOW_TRACKING_URI``, else ``sqlite:///<cwd>/mlflow.db``; sqlite paths made
    absolute (a relative store would move with every Hydra or Slurm working directory). ``must_exist``: a
    reader's check, since opening a missing sqlite file silently creates an empty store that has "no runs"."""
    uri = configured or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"
    if not uri.startswith("sqlite:///"):
        return uri
    db_path = Path(uri.removeprefix("sqlite:///")).resolve()
    if must_exist and not db_path.is_file():
        raise ValueError(
            f"no MLflow store at {db_path} (tracking URI {uri}): run a training first, or pass "
            "tracking_uri= / set MLFLOW_TRACKING_URI to the store that holds the runs"
        )
    return f"sqlite:///{db_path}"


def resolve_experiment_name(configured: str | None) -> str:
    return configured or keys.DEFAULT_EXPERIMENT_NAME


def check_reachable(uri: str, timeout_s: float = REACHABILITY_TIMEOUT_S) -> None:
    """Fails in seconds, naming the URI, when a server does not answer (MLflow itself retries for minutes)."""
    if uri.startswith("sqlite:///"):
        db_dir = Path(uri.removeprefix("sqlite:///")).parent
        if not db_dir.is_dir():
            raise ValueError(
                f"MLflow store {uri}: directory {db_dir} does not exist; create it or fix the URI"
            )
        return
    if not uri.startswith(("http://", "https://")):
        return
    health, shown = uri.rstrip("/") + "/health", redact_uri(uri)
    try:
        with urllib.request.urlopen(health, timeout=timeout_s) as response:
            if response.status != 200:
                raise ConnectionError(f"MLflow tracking server {shown} answered {response.status} on /health")
    except (urllib.error.URLError, OSError) as error:
        raise ConnectionError(
            f"MLflow tracking server {shown} is unreachable ({redact_text(str(error))}); start it, or point "
            "logger.tracking_uri / MLFLOW_TRACKING_URI at a running server"
        ) from None  # the chained error's text would show the URI's password


def get_or_create_experiment(client: MlflowClient, name: str) -> str:
    """The id of the active experiment ``name``, created if missing (a deleted one is not reused), tagged as a
    model-training experiment (``mlflow.experimentKind``, the tag MLflow 3 reads to tell them from GenAI ones;
    3.17's UI itself follows its GenAI / Model training switch, which compare's link sets). An existing
    experiment without the tag gets it."""
    kind = {keys.TAG_EXPERIMENT_KIND: keys.EXPERIMENT_KIND_TRAINING}
    experiment = client.get_experiment_by_name(name)
    if experiment is None or experiment.lifecycle_stage == "deleted":
        return str(client.create_experiment(name, tags=kind))
    if keys.TAG_EXPERIMENT_KIND not in experiment.tags:
        client.set_experiment_tag(experiment.experiment_id, *kind.popitem())
    return str(experiment.experiment_id)


def flatten(config: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``{"a": {"b": 1}}`` -> ``("a.b", 1)``: MLflow params are flat."""
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from flatten(value, f"{name}.")
        else:
            yield name, value


def git_state(repo_dir: Path) -> tuple[str, str]:
    """(commit, dirty) of the checkout holding the code, ("unknown", "unknown") outside a git checkout."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=repo_dir, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
    except (subprocess.SubprocessError, OSError):
        return "unknown", "unknown"
    try:
        dirty = "true" if git("status", "--porcelain", "--untracked-files=no") else "false"
    except (subprocess.SubprocessError, OSError):
        dirty = "unknown"
    return commit, dirty


def _user() -> str:
    """The user running the job, as MLflow's fluent API would tag it (``mlflow.user``)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry for the uid (containers) and no USER variable
        return f"uid-{os.getuid()}"


def run_tags(
    *, name: str, seed: int, study: str, world_size: int, strategy: str, num_nodes: int = 1
) -> dict[str, str]:
    commit, dirty = git_state(Path(__file__).resolve().parent)
    return {
        keys.TAG_MLFLOW_SOURCE_NAME: keys.SOURCE_NAME_TRAIN,
        keys.TAG_MLFLOW_SOURCE_TYPE: keys.SOURCE_TYPE_LOCAL,
        keys.TAG_MLFLOW_USER: _user(),
        keys.TAG_KIND: keys.KIND_TRAINING,
        keys.TAG_EXPERIMENT: name,
        keys.TAG_SEED: str(seed),
        keys.TAG_STUDY: study,
        keys.TAG_GIT_COMMIT: commit,
        **({keys.TAG_MLFLOW_GIT_COMMIT: commit} if commit != "unknown" else {}),
        keys.TAG_GIT_DIRTY: dirty,
        keys.TAG_HOST: socket.gethostname(),
        keys.TAG_WORLD_SIZE: str(world_size),
        keys.TAG_NUM_NODES: str(num_nodes),
        keys.TAG_STRATEGY: strategy,
    }


def param_batches(params: dict[str, Any]) -> Iterator[list[Any]]:
    """``params`` as MLflow ``Param`` lists of at most one request's worth, values cut to MLflow's limit."""
    from mlflow.entities import Param

    items = [Param(key, str(value)[:_PARAM_VALUE_LIMIT]) for key, value in params.items()]
    for start in range(0, len(items), _PARAMS_PER_BATCH):
        yield items[start : start + _PARAMS_PER_BATCH]


def reopen_run(client: MlflowClient, run_id: str, tags: dict[str, str]) -> None:
    """Continues a run: back to RUNNING, tags refreshed (host and world size may differ after a requeue)."""
    from mlflow.entities import RunStatus

    client.get_run(run_id)  # raises a clear "Run ... not found" for a wrong id
    client.update_run(run_id, status=RunStatus.to_string(RunStatus.RUNNING))
    for key, value in tags.items():
        client.set_tag(run_id, key, value)


def run_exists(client: MlflowClient, run_id: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        client.get_run(run_id)
    except MlflowException:
        return False
    return True


def mark_failed(client: MlflowClient, run_id: str) -> None:
    from mlflow.entities import RunStatus

    client.set_terminated(run_id, RunStatus.to_string(RunStatus.FAILED))
