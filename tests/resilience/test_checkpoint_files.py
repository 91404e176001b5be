"""Checkpoint files: atomic writes keep the previous version; a resume skips an unreadable newest checkpoint
with a warning naming both files, refuses to silently start over, and never unpickles code."""

from __future__ import annotations

import logging
import os
import time

import pytest
import torch

from pipeline.checkpoints import AtomicCheckpointIO, UnsafeCheckpointError, load_checkpoint, save_atomically
from pipeline.tracking.identity import RunIdentity, newest_checkpoint
from pipeline.train import train
from tests.helpers.training import compose_train


def _checkpoint(step: int) -> dict:
    return {"state_dict": {"w": torch.full((4,), float(step))}, "loops": {}, "global_step": step}


def _step(path) -> int:
    return load_checkpoint(path)["global_step"]


def test_a_write_replaces_atomically_and_keeps_the_previous_version(tmp_path):
    path = tmp_path / "last.ckpt"
    for step in (1, 2, 3):
        save_atomically(_checkpoint(step), path)
        time.sleep(0.01)
    assert _step(path) == 3 and _step(tmp_path / "last.ckpt.prev") == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt", "last.ckpt.prev"]  # no temporaries


def test_a_truncated_newest_checkpoint_falls_back_to_the_previous_with_a_warning(tmp_path, caplog):
    path = tmp_path / "last.ckpt"
    save_atomically(_checkpoint(1), path)
    time.sleep(0.01)
    save_atomically(_checkpoint(2), path)
    path.write_bytes(path.read_bytes()[:1000])  # what a node lost mid-write leaves on a non-atomic filesystem
    with caplog.at_level(logging.WARNING):
        chosen = newest_checkpoint(tmp_path)
    assert chosen == tmp_path / "last.ckpt.prev" and _step(chosen) == 1
    assert (
        f"resuming from {tmp_path / 'last.ckpt.prev'}: the newer checkpoint {path} is unreadable"
        in caplog.text
    )


def test_no_readable_checkpoint_refuses_to_start_over(tmp_path):
    (tmp_path / "last.ckpt").write_bytes(b"\0" * 4096)
    with pytest.raises(ValueError, match="no checkpoint in .* loads \\(last.ckpt\\); refusing to start over"):
        newest_checkpoint(tmp_path)


def test_a_kill_during_a_write_leaves_the_old_file_and_a_temporary_that_resolve_removes(tmp_path):
    ckpt_dir = tmp_path / "checkpoints"
    save_atomically(_checkpoint(1), ckpt_dir / "last.ckpt")
    (ckpt_dir / ".last.ckpt.tmp-4242").write_bytes(b"PK\3\4 half a checkpoint")  # the killed writer's file
    identity = RunIdentity.resolve(
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", experiment_name="x", ckpt_dir=ckpt_dir, environ={}
    )
    assert identity.ckpt_path == ckpt_dir / "last.ckpt"
    assert sorted(p.name for p in ckpt_dir.iterdir()) == ["last.ckpt"]


class _Payload:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_crafted_checkpoint_is_refused_not_run(tmp_path, mlflow_uri):
    marker = tmp_path / "code-ran"
    crafted = tmp_path / "crafted.ckpt"
    torch.save({"state_dict": {}, "loops": {}, "mlflow_run_id": _Payload(str(marker))}, crafted)
    with pytest.raises(UnsafeCheckpointError, match=f"refusing to load {crafted}: .*GLOBAL posix.system"):
        load_checkpoint(crafted)
    with pytest.raises(UnsafeCheckpointError):
        train(
            compose_train(
                [
                    "data=synthetic",
                    f"ckpt_path={crafted}",
                    f"paths.output_dir={tmp_path}",
                    f"logger.tracking_uri={mlflow_uri}",
                ]
            )
        )
    with pytest.raises(ValueError, match="weights_only=True only"):
        AtomicCheckpointIO().load_checkpoint(crafted, weights_only=False)
    assert not marker.exists()
