"""MLflow for training jobs: where the store is, one run per job whatever the number of processes, resuming.

The launching process (global rank 0) creates or resumes the run *before* the Trainer starts and exports
its id in ``ALEXNET_MLFLOW_RUN_ID``: Lightning's ``ddp`` launcher re-executes the command for the other local
ranks and they inherit the variable, so no rank ever creates a second run. Ranks started by an external
launcher (torchrun, srun) receive the id by broadcast once the process group exists
(``pipeline.callbacks.RunIdBroadcast``); only rank 0 talks to MLflow in any case.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # MLflow and torch load where used: the CLI's config errors stay fast
    from mlflow.tracking import MlflowClient

RUN_ID_ENV = "ALEXNET_MLFLOW_RUN_ID"
CKPT_PATH_ENV = "ALEXNET_RESUME_CKPT"
RUN_RECORD_NAME = "mlflow_run.json"
CKPT_RUN_ID_KEY = "mlflow_run_id"
CKPT_DIR_TAG = "ckpt_dir"
REACHABILITY_TIMEOUT_S = 5.0
_PARAMS_PER_BATCH = 100
_PARAM_VALUE_LIMIT = 6000


def launch_rank() -> int:
    """This process's global rank as the launcher set it (0 for a plain process), before any process group."""
    for variable in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        if variable in os.environ:
            return int(os.environ[variable])
    return 0


def resolve_tracking_uri(configured: str | None) -> str:
    """``logger.tracking_uri``, else ``MLFLOW_TRACKING_URI``, else ``sqlite:///<cwd>/mlflow.db``, absolute."""
    uri = configured or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        return f"sqlite:///{Path.cwd().resolve() / 'mlflow.db'}"
    if uri.startswith("sqlite:///"):
        db_path = Path(uri.removeprefix("sqlite:///"))
        if not db_path.is_absolute():  # a relative store would move with every Hydra/Slurm working directory
            return f"sqlite:///{db_path.resolve()}"
    return uri


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
    health = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(health, timeout=timeout_s) as response:
            if response.status != 200:
                raise ConnectionError(f"MLflow tracking server {uri} answered {response.status} on /health")
    except (urllib.error.URLError, OSError) as error:
        raise ConnectionError(
            f"MLflow tracking server {uri} is unreachable ({error}); start it, or point "
            "logger.tracking_uri / MLFLOW_TRACKING_URI at a running server"
        ) from error


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


def run_tags(
    *, name: str, seed: int, study: str, world_size: int, strategy: str, num_nodes: int = 1
) -> dict[str, str]:
    commit, dirty = git_state(Path(__file__).resolve().parent)
    return {
        "experiment": name,
        "seed": str(seed),
        "study": study,
        "git_commit": commit,
        "git_dirty": dirty,
        "host": socket.gethostname(),
        "world_size": str(world_size),
        "num_nodes": str(num_nodes),
        "strategy": strategy,
    }


def create_run(
    client: MlflowClient, experiment_name: str, run_name: str, tags: dict[str, str], params: dict[str, Any]
) -> str:
    from mlflow.entities import Param

    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None or experiment.lifecycle_stage == "deleted":
        experiment_id = client.create_experiment(experiment_name)
    else:
        experiment_id = experiment.experiment_id
    run = client.create_run(experiment_id, run_name=run_name, tags=tags)
    items = [Param(key, str(value)[:_PARAM_VALUE_LIMIT]) for key, value in params.items()]
    for start in range(0, len(items), _PARAMS_PER_BATCH):
        client.log_batch(run.info.run_id, params=items[start : start + _PARAMS_PER_BATCH])
    return run.info.run_id


def reopen_run(client: MlflowClient, run_id: str, tags: dict[str, str]) -> None:
    """Continues a run: back to RUNNING, tags refreshed (host and world size may differ after a requeue)."""
    from mlflow.entities import RunStatus

    client.get_run(run_id)  # raises a clear "Run ... not found" for a wrong id
    client.update_run(run_id, status=RunStatus.to_string(RunStatus.RUNNING))
    for key, value in tags.items():
        client.set_tag(run_id, key, value)


def mark_failed(client: MlflowClient, run_id: str) -> None:
    from mlflow.entities import RunStatus

    client.set_terminated(run_id, RunStatus.to_string(RunStatus.FAILED))


def write_run_record(ckpt_dir: Path, run_id: str, tracking_uri: str) -> None:
    """``<ckpt_dir>/mlflow_run.json``: lets a requeued job find its run beside its ``last.ckpt``. Atomic."""
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=ckpt_dir, delete=False, suffix=".tmp") as handle:
        json.dump({"run_id": run_id, "tracking_uri": tracking_uri}, handle)
    os.replace(handle.name, ckpt_dir / RUN_RECORD_NAME)


def read_run_record(ckpt_dir: Path) -> str | None:
    record = ckpt_dir / RUN_RECORD_NAME
    if not record.is_file():
        return None
    return json.loads(record.read_text())["run_id"]


def run_id_in_checkpoint(ckpt_path: Path) -> str | None:
    """The run id ``RunIdBroadcast`` stored in a checkpoint (memory-mapped: cheap even for 240 MB)."""
    import torch

    checkpoint = torch.load(ckpt_path, map_location="cpu", mmap=True, weights_only=False)
    return checkpoint.get(CKPT_RUN_ID_KEY)


def checkpoint_of_run(client: MlflowClient, run_id: str) -> Path:
    """``<ckpt_dir>/last.ckpt`` of a run, from the ``ckpt_dir`` tag the run was started with."""
    ckpt_dir = client.get_run(run_id).data.tags.get(CKPT_DIR_TAG)
    last = Path(ckpt_dir) / "last.ckpt" if ckpt_dir else None
    if last is None or not last.is_file():
        raise ValueError(
            f"resume_run_id={run_id}: no last.ckpt under the run's ckpt_dir tag ({ckpt_dir}); "
            "pass ckpt_path=PATH to the checkpoint to resume"
        )
    return last
