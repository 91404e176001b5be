"""Checkpoint files: written atomically with the previous version kept, read with ``weights_only=True``.

Writing: to a temporary file beside the target, flushed to disk (fsync), then renamed over it (POSIX rename is
atomic), so a job killed while writing leaves the previous checkpoint intact and a stray temporary file. The
version a write replaces is kept as ``<name>.prev``: if the newest file is damaged after all (a node lost with
the rename on disk but not the data, a non-POSIX network filesystem), the job resumes from the one before.

Reading: ``torch.load(weights_only=True)``: only tensors, primitive types and the few allow-listed types
below; a checkpoint that carries anything else (a pickled object, code) is refused with a clear error.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

# The files of a job's ckpt_dir, named here once: the callbacks write them, RunIdentity resumes them.
LAST_STEM = "last"  # what a requeued or restarted job resumes: every epoch's end, periodically, on SIGTERM
LAST_NAME = f"{LAST_STEM}.ckpt"
BEST_STEM = "best-epoch{epoch:03d}"  # ModelCheckpoint's filename pattern for the best val/top1_error
PREVIOUS_SUFFIX = ".prev"
TEMPORARY_MARK = ".tmp-"
# Types a Lightning checkpoint of this project may hold beyond tensors and primitives: none today (hparams
# are plain values, the loader's position is ints); add a type here, never weights_only=False.
SAFE_GLOBALS: list[Any] = []


class UnsafeCheckpointError(ValueError):
    """A checkpoint that holds more than tensors and plain values: refused rather than unpickled."""


def previous_of(path: Path) -> Path:
    return path.with_name(path.name + PREVIOUS_SUFFIX)


def temporary_of(path: Path) -> Path:
    return path.with_name(f".{path.name}{TEMPORARY_MARK}{os.getpid()}")


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def save_atomically(checkpoint: dict[str, Any], path: Path) -> None:
    """``torch.save`` to a temporary file, fsync, keep the file it replaces as ``.prev``, rename it in."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_of(path)
    try:
        with temporary.open("wb") as stream:
            torch.save(checkpoint, stream)
            stream.flush()
            os.fsync(stream.fileno())
        if path.is_file():
            os.replace(path, previous_of(path))
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    _fsync_directory(path.parent)


def load_checkpoint(path: str | Path, map_location: Any = "cpu", *, mmap: bool = False) -> dict[str, Any]:
    """A checkpoint read with ``weights_only=True`` (and the allow-list); UnsafeCheckpointError if it needs
    more. Other damage (truncation, not a checkpoint) raises what torch raises."""
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as error:
        if "weights_only" not in str(error):
            raise
        lines = [line for line in str(error).splitlines() if "GLOBAL" in line or "Unsupported" in line]
        why = " ".join(lines) or str(error).splitlines()[0]
        raise UnsafeCheckpointError(
            f"refusing to load {path}: it holds objects beyond tensors and plain values, which loading could "
            f"execute ({why}). Load only checkpoints you trust; a type this project needs belongs in "
            "pipeline.checkpoints.files.SAFE_GLOBALS"
        ) from error


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO through ``save_atomically`` and ``load_checkpoint`` (a Trainer plugin)."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO.save_checkpoint takes no storage_options")
        save_atomically(checkpoint, Path(path))

    def load_checkpoint(
        self,
        path: str | os.PathLike,
        map_location: Callable | Any = "cpu",
        weights_only: bool | None = None,
    ) -> dict[str, Any]:
        if weights_only is False:
            raise ValueError("checkpoints are loaded with weights_only=True only (pipeline.checkpoints)")
        if not Path(path).is_file():
            raise FileNotFoundError(f"checkpoint {path} not found")
        return load_checkpoint(path, map_location)
