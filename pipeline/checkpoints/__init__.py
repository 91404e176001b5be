"""Checkpoints: the files (atomic writes, names, safe reads) and what they hold beyond Lightning's own state
for an exact resume. Imports no other wing (tracking reads checkpoints to find a job's run)."""

from pipeline.checkpoints.files import (
    LAST_NAME,
    LAST_STEM,
    AtomicCheckpointIO,
    UnsafeCheckpointError,
    load_checkpoint,
    save_atomically,
)
from pipeline.checkpoints.resume import ResumeState

__all__ = [
    "LAST_NAME",
    "LAST_STEM",
    "AtomicCheckpointIO",
    "ResumeState",
    "UnsafeCheckpointError",
    "load_checkpoint",
    "save_atomically",
]
