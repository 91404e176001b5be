"""Common random numbers, recorded by the run: what makes two runs of one seed pairs by construction.

Two arms of a study (``baseline`` and ``no_lrn``, say) run with the same seed are pairs when they start from
the same weights and see the same samples, in the same order, with the same crops, flips and PCA lighting
draws: their difference is then the change's effect plus far less noise than two unrelated runs have, and
``pipeline.compare`` reads the change with a paired interval. Each run records both halves as tags:

- ``crn_init``: a sha256 of the net's initial parameters (names, shapes, dtypes, values), taken before any
  checkpoint is loaded. Equal for an arm that changes no parameter (LRN, pooling and dropout have none);
  another for one that changes a shape (``one_gpu_half``'s halved kernels).
- ``crn_data``: a sha256 of what the training stream is a function of (``data_stream_settings``): the prep
  (its manifest's sha256), the data seed, the global batch and its split over processes, the decoding workers
  (each draws its own stream), the shuffle buffer, the crop and stored sizes. The crops and flips come from
  ``sample_draws(seed, epoch, rank, worker, index)`` and the lighting from ``pca_lighting_generator(seed,
  step, rank)``, never from the global RNG, so no model setting (dropout draws from the global RNG) moves
  them. Left out: settings that change no draw (the lighting's strength scales the same draws; mean
  subtraction, the val batch, pinning, the worker start method, where the JPEGs decode); any other data
  setting is in, so a new one breaks pairing rather than faking it.

tests/train/test_crn.py checks, per shipped experiment, which keep the baseline's tags.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline.tracking import keys
from pipeline.tracking.lineage import manifest_sha256

# Data settings that change no draw of the training stream (see the module docstring).
NOT_IN_STREAM = frozenset(
    {
        "root",  # stands in as its manifest's sha256: the same prep under another path is the same data
        "pca_lighting",
        "mean_subtraction",
        "val_batch_size",
        "pin_memory",
        "persistent_workers",
        "verify",  # checking the shards changes no sample while they are intact (pipeline.data.shard_checks)
        "multiprocessing_context",
        "decode",
    }
)


def init_fingerprint(net: nn.Module) -> str:
    """sha256 of the parameters and buffers: name, shape, dtype and bytes of each, in state_dict order."""
    digest = hashlib.sha256()
    for name, tensor in net.state_dict().items():
        value = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(value.shape)}:{value.dtype};".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def data_stream_settings(data: Mapping[str, Any], world_size: int) -> dict[str, Any]:
    """The settings the training stream's order and draws are a function of (JSON-able)."""
    settings = {key: data[key] for key in sorted(data) if key not in NOT_IN_STREAM}
    root = data.get("root")
    if root is not None and Path(str(root)).is_dir():
        settings["manifest_sha256"] = manifest_sha256(str(root))
    settings["world_size"] = world_size
    return settings


def data_fingerprint(data: Mapping[str, Any], world_size: int) -> str:
    text = json.dumps(data_stream_settings(data, world_size), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def crn_tags(net: nn.Module, data: Mapping[str, Any], world_size: int) -> dict[str, str]:
    """The run's ``crn_init`` and ``crn_data`` tags (call with the freshly initialised net)."""
    return {
        keys.TAG_CRN_INIT: init_fingerprint(net),
        keys.TAG_CRN_DATA: data_fingerprint(data, world_size),
    }
