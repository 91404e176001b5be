"""Data lineage: which prep output trained a run, logged as an MLflow dataset input.

The dataset is the prep output as a whole (``manifest.json`` + its shards): name = the folder's name, source =
``data.root``, digest = the manifest's sha256 (which lists every shard's sha256, so it identifies the exact
bytes trained on), and a profile with the sample counts per split and the number of classes. The UI shows it
in the runs' Datasets column; ``pipeline.compare`` never averages runs of different digests.

MLflow caps a dataset digest at 36 characters, so the digest is the first 32 hex digits (128 bits) of the
sha256; the full hash is in the profile and in the run's ``data_manifest_sha256`` tag.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from mlflow.entities import Dataset, DatasetInput, InputTag
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

from data_prep.manifest import MANIFEST_NAME, load_manifest
from pipeline.tracking import keys

log = logging.getLogger(__name__)

DIGEST_CHARS = 32  # of the sha256's 64 hex digits; MLflow's limit is 36 (mlflow.utils.validation)


def manifest_sha256(root: str | Path) -> str:
    return hashlib.sha256((Path(root) / MANIFEST_NAME).read_bytes()).hexdigest()


def prep_profile(root: str | Path) -> dict[str, Any]:
    """What the run trained on, as the manifest states it: samples per split, classes, the full sha256."""
    manifest = load_manifest(root)
    profile: dict[str, Any] = {f"{name}_samples": split.samples for name, split in manifest.splits.items()}
    profile["classes"] = manifest.num_classes
    profile["manifest_sha256"] = manifest_sha256(root)
    return profile


LOCAL_SOURCE_TYPE = "local"  # MLflow's dataset source type for a local folder (the UI shows its uri)


def prep_dataset(root: str | Path) -> Dataset:
    """The prep output at ``root`` as an MLflow dataset entity: metadata only, the shards stay where they are
    (no schema: the samples are JPEG files, described by the profile)."""
    root = Path(root).expanduser().resolve()
    profile = prep_profile(root)
    return Dataset(
        name=root.name,
        digest=profile["manifest_sha256"][:DIGEST_CHARS],
        source_type=LOCAL_SOURCE_TYPE,
        source=json.dumps({"uri": str(root)}),
        profile=json.dumps(profile),
    )


def log_prep_input(client: MlflowClient, run_id: str, root: str | Path) -> str:
    """Logs the prep output at ``root`` as the run's dataset input; returns the digest."""
    dataset = prep_dataset(root)
    context = InputTag(key=MLFLOW_DATASET_CONTEXT, value=keys.DATASET_CONTEXT)
    client.log_inputs(run_id, datasets=[DatasetInput(dataset, tags=[context])])
    client.set_tag(run_id, keys.TAG_DATA_MANIFEST_SHA256, json.loads(dataset.profile)["manifest_sha256"])
    return dataset.digest


def log_lineage(identity: Any, datamodule: Any) -> str | None:
    """pipeline.train's one call, once the run is open: on the launching process, for shard data (synthetic
    data has no prep output), logs the dataset input. Returns the digest (None where nothing was logged)."""
    manifest = getattr(datamodule, "manifest", None)
    if not getattr(identity, "launcher", False) or manifest is None or identity.run_id is None:
        return None
    client = MlflowClient(identity.tracking_uri)
    digest = log_prep_input(client, identity.run_id, manifest.root)
    verify = getattr(datamodule, "verify", None)
    if verify is not None:  # off: the digest is the manifest's word alone, no shard was checked
        client.set_tag(identity.run_id, keys.TAG_DATA_VERIFY, str(verify))
    log.info("data lineage: %s (digest %s) logged into run %s", manifest.root, digest, identity.run_id)
    return digest
