"""Byte-identical output whatever ``workers`` is and however often the run was killed."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from data_prep.fake import make_fake_imagenet
from data_prep.prep import run_prep
from tests.helpers.paths import REPO


@pytest.fixture(scope="module")
def photo_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ImageNet-sized photos (500x375), enough of them that a prep takes long enough to be killed mid-run."""
    root = tmp_path_factory.mktemp("photos")
    return make_fake_imagenet(root, classes=4, train_per_class=25, val_per_class=5, image_size=(500, 375))


@pytest.fixture(scope="module")
def reference(photo_source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("reference")
    run_prep(photo_source, out, workers=1, shard_samples=4, progress=False)
    return out


@pytest.mark.slow
def test_workers_1_and_2_give_identical_output(photo_source, reference, tmp_path, shard_files) -> None:
    run_prep(photo_source, tmp_path, workers=2, shard_samples=4, progress=False)
    assert shard_files(tmp_path) == shard_files(reference)


def _group_gone(group: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def _prep_command(source: Path, out: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "data_prep",
        f"source={source}",
        f"out={out}",
        "workers=2",
        "shard_samples=4",
        "progress=false",
    ]


@pytest.mark.slow
def test_sigkill_mid_run_then_rerun_is_byte_identical(photo_source, reference, tmp_path, shard_files) -> None:
    out = tmp_path / "out"
    process = subprocess.Popen(_prep_command(photo_source, out), cwd=REPO, start_new_session=True)
    deadline = time.monotonic() + 120
    while not list(out.glob("train/train-*.tar")) and time.monotonic() < deadline:
        assert process.poll() is None, "prep ended before the test could kill it"
        time.sleep(0.005)
    process.kill()  # SIGKILL to the parent only: its workers must die with it, not finish shards behind it
    process.wait()
    finished = sorted(out.glob("train/train-*.tar"))
    try:
        assert _group_gone(process.pid), "prep workers survived their parent's SIGKILL"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    assert sorted(out.glob("train/train-*.tar")) == finished, "a worker wrote a shard after its parent died"
    assert finished and len(finished) < 25, "the kill should land mid-run"
    assert not (out / "manifest.json").exists()

    result = subprocess.run(_prep_command(photo_source, out), cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert shard_files(out) == shard_files(reference)
    assert not list(out.glob("*/.*.tmp"))  # the killed run's temporary files are gone


def test_rerun_keeps_finished_shards_and_redoes_a_damaged_one(
    photo_source, reference, tmp_path, shard_files
) -> None:
    run_prep(photo_source, tmp_path, workers=1, shard_samples=4, splits=["val"], progress=False)
    shard = tmp_path / "val" / "val-000001.tar"
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "val").glob("*.tar")}
    data = bytearray(shard.read_bytes())
    data[2000] ^= 0xFF
    shard.write_bytes(bytes(data))
    run_prep(photo_source, tmp_path, workers=1, shard_samples=4, splits=["val"], progress=False)
    after = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "val").glob("*.tar")}
    assert after["val-000000.tar"] == before["val-000000.tar"]  # verified and kept
    assert shard.read_bytes() == (reference / "val" / "val-000001.tar").read_bytes()  # redone
