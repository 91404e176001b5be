"""Where data_prep keeps its resume state: one sidecar per finished shard, outside the shard folders.

``<out>/.prep-state/<split>/<shard>.tar.done.json`` (``shards.py`` writes and reads them). The shard folders
``train/`` and ``val/`` hold only tars, so the ecosystem's readers (HF ``datasets`` with ``data_dir=``,
``webdataset`` over a glob) read them as they are. Outputs of earlier versions kept each sidecar beside its
shard; they are still read (a rerun resumes them) and moved here when the shard is next written.
"""

from __future__ import annotations

from pathlib import Path

PREP_STATE_DIR = ".prep-state"
SIDECAR_SUFFIX = ".done.json"


def sidecar_path(out: Path, shard_name: str) -> Path:
    """The sidecar of shard ``shard_name`` (``train/train-000000.tar``) of the prep output ``out``."""
    return out / PREP_STATE_DIR / (shard_name + SIDECAR_SUFFIX)


def legacy_sidecar_path(out: Path, shard_name: str) -> Path:
    """Where outputs of earlier versions kept it: beside the shard."""
    return out / (shard_name + SIDECAR_SUFFIX)
