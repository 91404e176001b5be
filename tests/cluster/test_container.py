"""The Dockerfile built by podman on a Debian base made here; the demo's prep and a training job run in it.

scripts/container.sh does the podman work (see its header for what this host needs). The build's pip uses the
host's pip settings and the test venv's versions as constraints, so the image holds the same releases as the
venv (the host's MLflow reads the store the container writes). Cold, the build takes ~15 minutes on a busy
2-core machine (debootstrap, 5.5 GB of torch and CUDA wheels, podman's commit of that layer); the base image
and the dependency layer are then kept in podman's store as a cache keyed by their inputs, and a warm build
only redoes the project's small layers. docs/cluster.md has the measured times.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.cluster.conftest import REPO, logged_steps, mlflow_runs

pytestmark = pytest.mark.slow

SCRIPT = REPO / "scripts" / "container.sh"
# Cold: debootstrap (~2 min), apt, pip of 5.5 GB of wheels and podman's commit of them (~13 min on a loaded
# 2-core machine). Warm: the project's layers only.
BUILD_TIMEOUT_S = 2400
RUN_TIMEOUT_S = 600
HOSTNAME = "alexnet-container"
# One short CPU training job on the shards the container's prep made; the MLflow store is a host folder.
TRAIN_OVERRIDES = (
    "+experiment=demo",
    "data.root=/data/demo/shards",
    "logger.tracking_uri=sqlite:////mlflow/mlflow.db",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=3",
    "trainer.limit_val_batches=1",
    "trainer.num_sanity_val_steps=0",
    "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false",
    "callbacks.conv1_figure=null",
    "hydra.run.dir=/workspace/run",
)


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "the image is built with rootful podman and debootstrap: run this test as root"
    if not shutil.which("podman") and not shutil.which("apt-get"):
        return "podman is not installed and apt-get is unavailable to install podman, runc and debootstrap"
    return None


def _script(*args: str, timeout_s: float, log: Path, env: dict[str, str] | None = None) -> float:
    """Runs scripts/container.sh ARGS, output to log; returns its wall time. A timeout ends it with SIGTERM
    (podman then stops what it started), SIGKILL 30 s later."""
    started = time.monotonic()
    with log.open("a") as out:
        process = subprocess.Popen(
            ["bash", str(SCRIPT), *args],
            env=env or os.environ.copy(),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            returncode = process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            pytest.fail(f"container.sh {args[0]} did not finish within {timeout_s:.0f}s:\n{_tail(log)}")
    assert returncode == 0, f"container.sh {' '.join(args[:3])}... failed ({returncode}):\n{_tail(log)}"
    return time.monotonic() - started


def _tail(log: Path, lines: int = 40) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def _podman(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["podman", *args], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The Dockerfile built on the local Debian base; removed afterwards (the cache layers stay)."""
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    work = tmp_path_factory.mktemp("image")
    name = f"localhost/alexnet-pipeline:test-{os.getpid()}"
    # The test venv's releases as constraints: the container writes the MLflow store this venv reads.
    frozen = subprocess.run(
        [sys.executable, "-m", "pip", "freeze", "--exclude-editable"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    constraints = work / "constraints.txt"
    constraints.write_text("".join(line + "\n" for line in frozen.splitlines() if "==" in line))
    env = {**os.environ, "PYTHON": sys.executable, "CONTAINER_PIP_CONSTRAINTS": str(constraints)}
    try:
        seconds = _script("build", name, timeout_s=BUILD_TIMEOUT_S, log=work / "build.log", env=env)
        print(f"\nimage {name} built in {seconds:.0f} s")
        yield name
    finally:
        _podman("rmi", "--force", "--ignore", name)
        assert _podman("image", "exists", name).returncode == 1, f"{name} was not removed"


def _container_run(name: str, log: Path, *args: str) -> None:
    """``podman run --rm --name NAME ARGS`` through container.sh; the container goes even on a timeout."""
    options = ("--rm", "--name", name, "--hostname", HOSTNAME, "--shm-size", "1g")
    try:
        _script("run", *options, *args, timeout_s=RUN_TIMEOUT_S, log=log)
    finally:
        _podman("rm", "--force", "--ignore", name)


def _mount_dir(path: Path, uid: int) -> Path:
    path.mkdir(parents=True)
    os.chown(path, uid, uid)
    return path


def test_demo_prep_and_training_run_in_the_image_as_non_root(
    image: str, demo_shards: Path, tmp_path: Path
) -> None:
    user = _podman("image", "inspect", "--format", "{{.Config.User}}", image).stdout.strip()
    assert user.isdigit() and int(user) != 0, f"the image runs as '{user}', not as a non-root uid"
    uid = int(user)
    data, store, workspace = (_mount_dir(tmp_path / name, uid) for name in ("data", "store", "workspace"))
    log = tmp_path / "container.log"
    tag = f"alexnet-test-{os.getpid()}"

    # The demo's prep inside the image: the same shards, byte for byte, as the host's prep made.
    prep = ("-m", "data_prep.demo", "out=/data/demo", "progress=false")
    _container_run(f"{tag}-prep", log, "--volume", f"{data}:/data", "--entrypoint", "python", image, *prep)
    made = json.loads((data / "demo" / "shards" / "manifest.json").read_text())
    expected = json.loads((demo_shards / "manifest.json").read_text())
    assert made["splits"] == expected["splits"]  # every shard's name, sample count and sha256
    assert (data / "demo" / "shards").stat().st_uid == uid

    # One training job on those shards, through the image's entrypoint (python -m pipeline.train).
    mounts = (f"{data}:/data:ro", f"{store}:/mlflow", f"{workspace}:/workspace")
    volumes = [option for mount in mounts for option in ("--volume", mount)]
    _container_run(f"{tag}-train", log, *volumes, image, *TRAIN_OVERRIDES)
    tracking_uri = f"sqlite:///{store / 'mlflow.db'}"
    (run,) = mlflow_runs(tracking_uri)
    assert run.info.status == "FINISHED"
    assert run.data.tags["host"] == HOSTNAME  # made inside the container, landed in the host's store
    assert logged_steps(tracking_uri, run.info.run_id) == [0, 1, 2]
    assert "val/top1_error" in MlflowClient(tracking_uri).get_run(run.info.run_id).data.metrics
    # Written by the image's user, not by root.
    assert (store / "mlflow.db").stat().st_uid == uid
    assert (workspace / "run" / "checkpoints" / "last.ckpt").stat().st_uid == uid
