"""A failing job exits non-zero within seconds with its run FAILED and no process left behind, whether the
fault is in a loader worker (train or val) or the main process, with 2 workers; a SIGTERM to the whole job
(as Slurm sends it, loader workers included) still gets its checkpoint written first."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from pipeline.checkpoints import load_checkpoint
from tests.helpers.paths import REPO
from tests.helpers.resume import job_overrides
from tests.helpers.training import runs_of

EXIT_BOUND_S = 10.0


def _small_jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (100, 100), (90, 120, 30)).save(out, format="JPEG")
    return out.getvalue()


def _with_small_first_images(shards: Path, split: str) -> None:
    """The first sample of every ``split`` shard becomes a 100x100 image: smaller than the 227 crop, a
    ValueError in the loader worker that decodes it (a configuration error, not a corrupt sample)."""
    for path in (shards / split).glob("*.tar"):
        out = io.BytesIO()
        with (
            tarfile.open(path) as source,
            tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar,
        ):
            members = source.getmembers()
            first = members[0].name.split(".")[0]
            for member in members:
                data = source.extractfile(member).read()
                if member.name == f"{first}.jpg":
                    data, member.size = _small_jpeg(), len(_small_jpeg())
                tar.addfile(member, io.BytesIO(data))
        path.write_bytes(out.getvalue())


class Job:
    """``python -m pipeline.train`` in its own session; stderr lines kept with the time they arrived."""

    def __init__(self, args: list[str], cwd: Path) -> None:
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "OMP_NUM_THREADS": "1",
        }
        command = [sys.executable, "-m", "pipeline.train", *args, f"hydra.run.dir={cwd / 'hydra'}"]
        self.process = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            start_new_session=True,
        )  # fmt: skip
        self.lines: list[tuple[float, str]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stderr:
            self.lines.append((time.monotonic(), line))

    def seconds_from(self, marker: str, timeout: float = 400) -> float:
        """Seconds from the first stderr line holding ``marker`` to the exit (killed past ``timeout``)."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=timeout)
        seen = [at for at, line in self.lines if marker in line]
        if self.process.poll() is None:
            ended = time.monotonic()
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            assert seen, f"no {marker!r} and still running after {timeout} s:\n{self.tail()}"
            return ended - seen[0]
        self._reader.join(timeout=10)
        assert seen, f"no {marker!r} in the job's stderr:\n{self.tail()}"
        return self.exited - seen[0]

    @property
    def exited(self) -> float:
        return max(at for at, _ in self.lines) if self.lines else time.monotonic()

    def tail(self) -> str:
        return "".join(line for _, line in self.lines[-40:])

    def group_gone(self, within: float = 10.0) -> bool:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            try:
                os.killpg(self.process.pid, 0)
            except ProcessLookupError:
                return True
            time.sleep(0.2)
        return False


def _run_fails_fast(job: Job, marker: str, uri: str, experiment: str) -> None:
    seconds = job.seconds_from(marker)
    assert job.process.returncode not in (0, None), job.tail()
    assert seconds < EXIT_BOUND_S, f"exited {seconds:.1f} s after the fault:\n{job.tail()}"
    assert job.group_gone(), "a process of the job outlived it"
    [run] = runs_of(MlflowClient(uri), experiment)
    assert run.info.status == "FAILED"


@pytest.mark.parametrize("split", ["train", pytest.param("val", marks=pytest.mark.slow)])
def test_a_fault_in_a_loader_worker_ends_the_job_in_seconds(demo_shards, tmp_path, mlflow_uri, split):
    shards = tmp_path / "shards"
    shutil.copytree(demo_shards, shards)
    _with_small_first_images(shards, split)
    experiment = f"worker_fault_{split}"
    args = [*job_overrides(shards, tmp_path / "out", mlflow_uri, experiment), "trainer.limit_train_batches=3"]
    args.append(
        "data.verify=off"
    )  # the rewritten shards differ from the manifest: a worker's fault is tested
    _run_fails_fast(Job(args, tmp_path), "smaller than the crop 227", mlflow_uri, experiment)


def test_a_fault_in_the_main_process_ends_the_job_in_seconds(demo_shards, tmp_path, mlflow_uri):
    fault = ["+callbacks.fault._target_=tests.helpers.faults.RaiseAtStep", "+callbacks.fault.step=2"]
    args = [*job_overrides(demo_shards, tmp_path / "out", mlflow_uri, "main_fault"), *fault]
    _run_fails_fast(Job(args, tmp_path), "injected fault at step 2", mlflow_uri, "main_fault")


@pytest.mark.slow
def test_sigterm_to_the_whole_job_checkpoints_before_anything_exits(demo_shards, tmp_path, mlflow_uri):
    fault = [
        "+callbacks.fault._target_=tests.helpers.faults.SignalAtStep",
        "+callbacks.fault.step=3",
        "+callbacks.fault.group=true",
    ]
    args = [*job_overrides(demo_shards, tmp_path / "out", mlflow_uri, "sigterm_job"), *fault]
    job = Job(args, tmp_path)
    job.process.wait(timeout=400)  # Lightning's SIGTERMException is a SystemExit: exit code 0, no result
    assert job.group_gone(), job.tail()
    checkpoint = load_checkpoint(tmp_path / "out" / "checkpoints" / "last.ckpt")
    assert checkpoint["global_step"] == 3
    [position] = checkpoint["loops"]["fit_loop"]["state_dict"]["combined_loader"]
    assert sum(position["ranks"][0]["batches"]) == 3  # the loader's position: 3 batches taken
