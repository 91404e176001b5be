"""The Dockerfile built by podman on a Debian base made here; the demo's prep and a training job run in it.

scripts/container.sh does the podman work (see its header for what this host needs). The build's pip uses the
host's pip settings and the test venv's releases of the image's packages as constraints, so the image holds
the same releases as the venv (the host's MLflow reads the store the container writes). Cold, the build takes
10-16 minutes on a busy 2-core machine (debootstrap, 6.6 GB of torch and CUDA wheels, podman's commit of that
layer); the base image and the dependency layer then stay in podman's store as a cache keyed by their inputs,
and a warm build redoes only the project's small layers. docs/cluster.md has the measured times.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterable, Iterator
from importlib import metadata
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from pipeline.tracking import keys
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


def _image_releases() -> dict[str, str]:
    """The releases this venv has of what the image installs: the project's requirements (pyproject.toml, no
    extras) and theirs, transitively and with the extras asked for, plus foolbox. As the image's constraints
    they make it hold the same MLflow (the container writes the store this venv reads), and only they key the
    image's dependency layer: a package added to this venv for something else does not rebuild it."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    releases = {"foolbox": metadata.version("foolbox")}  # installed with --no-deps
    pending: list[tuple[str, str]] = []  # (package, extra) to expand; extra "" is the package itself
    expanded: set[tuple[str, str]] = set()

    def need(requirements: Iterable[str], extra: str) -> None:
        for requirement in map(Requirement, requirements):
            if requirement.marker is None or requirement.marker.evaluate({"extra": extra}):
                pending.extend((requirement.name, wanted) for wanted in ("", *requirement.extras))

    need(project["dependencies"], "")
    while pending:
        name, extra = pending.pop()
        name = canonicalize_name(name)
        if (name, extra) in expanded:
            continue
        expanded.add((name, extra))
        try:
            releases[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue  # not installed here: the image's pip resolves it freely
        need(metadata.requires(name) or (), extra)
    return releases


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The Dockerfile built on the local Debian base; removed afterwards (the cache layers stay)."""
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    work = tmp_path_factory.mktemp("image")
    name = f"localhost/alexnet-pipeline:test-{os.getpid()}"
    constraints = work / "constraints.txt"
    releases = sorted(_image_releases().items())
    constraints.write_text("".join(f"{package}=={version}\n" for package, version in releases))
    env = {**os.environ, "PYTHON": sys.executable, "CONTAINER_PIP_CONSTRAINTS": str(constraints)}
    try:
        seconds = _script("build", name, timeout_s=BUILD_TIMEOUT_S, log=work / "build.log", env=env)
        print(f"\nimage {name} built in {seconds:.0f} s")
        yield name
    finally:
        if shutil.which("podman"):  # (absent if the build failed before installing it)
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
    assert keys.VAL_TOP1 in MlflowClient(tracking_uri).get_run(run.info.run_id).data.metrics
    # Written by the image's user, not by root.
    assert (store / "mlflow.db").stat().st_uid == uid
    assert (workspace / "run" / "checkpoints" / "last.ckpt").stat().st_uid == uid
