"""A Hydra callback for parallel launchers: make the MLflow store and experiment once, before the jobs start.

The jobs of a Slurm sweep (and the ranks of a DDP job) start within seconds of each other. Against a fresh
sqlite store each would create MLflow's tables and the experiment at the same time, and all but one fail
("table ... already exists", "experiment ... already exists"). The submitting process does it first, so the
jobs only ever open an existing store. conf/hydra/launcher/slurm.yaml registers it (hydra.callbacks).
"""

from __future__ import annotations

import logging
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from alexnet_common.redact import redact_uri
from pipeline.tracking import store
from pipeline.tracking.shared_store import prepare_store

log = logging.getLogger(__name__)


def prepare_tracking_store(tracking_uri: str | None, experiment_name: str | None) -> str:
    """Creates the store behind ``tracking_uri`` (resolved as pipeline.train does) and the experiment; returns
    the experiment id."""
    uri = store.resolve_tracking_uri(tracking_uri)
    store.check_reachable(uri)
    name = store.resolve_experiment_name(experiment_name)
    experiment_id = prepare_store(uri, name)
    log.info("MLflow experiment %s (%s) ready in %s", name, experiment_id, redact_uri(uri))
    return experiment_id


class PrepareTrackingStore(Callback):
    """Runs :func:`prepare_tracking_store` in the submitting process at the start of a multirun."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        prepare_tracking_store(config.logger.get("tracking_uri"), config.logger.get("experiment_name"))
