"""Every training job's net as an MLflow model: at the end of training (after the final eval, whose
``eval/*`` metrics it links), the final weights, or the best checkpoint's with ``weights=best``, are logged as
the pyfunc of ``pipeline.serving`` (``runs:/<run id>/model``), with the manifest's class index and mean, a
signature and an input example (a val image of the prep output). ``register_model=NAME`` also registers it
as a new version of NAME. Logging happens once, after the last step, so it never slows training
(``bench/model_logging.py`` times it); a failure after the retries fails the job (exit code non-zero).
"""

from __future__ import annotations

import logging
import tarfile
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint

from pipeline.checkpoints.files import load_checkpoint
from pipeline.data import ShardDataModule
from pipeline.serving import model_code
from pipeline.serving.bundle import ModelCard, write_bundle
from pipeline.serving.classifier import IMAGE_COLUMN, signature
from pipeline.tracking.logged_model import check_model_name, log_pyfunc_model
from pipeline.tracking.writer import run_writer
from pipeline.training.final_eval import checked_weights

log = logging.getLogger(__name__)

NET_PREFIX = "net."  # the LightningModule's state_dict keys of the net


def model_card(module: LightningModule, datamodule: ShardDataModule) -> ModelCard:
    classes = datamodule.manifest.classes
    mean = datamodule.mean if datamodule.mean_subtraction else torch.zeros(3)
    return ModelCard(
        hparams=asdict(module.net_hparams),
        wnids=[c.wnid for c in classes],
        names=[c.name for c in classes],
        mean=[float(value) for value in mean],
        full_size=int(datamodule.full_size),
    )


def first_val_jpeg(datamodule: ShardDataModule) -> bytes:
    """A real image for the input example: the first JPEG of the first val shard."""
    with tarfile.open(datamodule.manifest.shard_paths("val")[0]) as shard:
        member = next(m for m in shard if m.isfile() and m.name.endswith(".jpg"))
        handle = shard.extractfile(member)
        assert handle is not None
        return handle.read()


class LogModel(Callback):
    """Args:
    enabled: false logs no model.
    weights: ``final`` or ``best`` (the ModelCheckpoint's best; the final weights where none was saved):
        ``callbacks.final_eval.weights``, so that the model is the net the eval/* metrics scored.
    register_model: a registered model name (``logger.register_model``): each run adds a version; None: off.
    """

    def __init__(
        self, enabled: bool = True, weights: str = "final", register_model: str | None = None
    ) -> None:
        checked_weights("callbacks.log_model.weights", weights)
        if register_model is not None:
            check_model_name(str(register_model))
        self.enabled = enabled
        self.weights = weights
        self.register_model = register_model
        self.model_uri: str | None = None

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        writer = run_writer(trainer)
        if not self.enabled or not trainer.is_global_zero or writer is None or writer.outbox is None:
            return
        datamodule = trainer.datamodule
        if not isinstance(datamodule, ShardDataModule):
            log.warning("no model logged: %s has no class index or mean", type(datamodule).__name__)
            return
        # The eval/* metrics must be in the run for MLflow to link them to the model.
        writer.outbox.flush(writer.flush_timeout_s)
        started = time.perf_counter()
        with tempfile.TemporaryDirectory() as scratch:
            artifacts = write_bundle(
                Path(scratch), model_card(pl_module, datamodule), self._state_dict(trainer, pl_module)
            )
            info = log_pyfunc_model(
                tracking_uri=writer.tracking_uri,
                run_id=str(writer.run_id),
                code_path=Path(model_code.__file__),
                artifacts=artifacts,
                signature=signature(),
                input_example=pd.DataFrame({IMAGE_COLUMN: [first_val_jpeg(datamodule)]}),
                params={"weights": self.weights, "num_classes": datamodule.num_classes},
                step=trainer.global_step,
                registered_model_name=self.register_model,
            )
        self.model_uri = info.model_uri
        version = f", registered as {self.register_model} version {info.registered_model_version}"
        log.info(
            "model logged in %.1f s: %s (model id %s)%s",
            time.perf_counter() - started,
            info.model_uri,
            info.model_id,
            version if self.register_model else "",
        )

    def _state_dict(self, trainer: Trainer, module: LightningModule) -> dict[str, torch.Tensor]:
        checkpoint = trainer.checkpoint_callback
        best = checkpoint.best_model_path if isinstance(checkpoint, ModelCheckpoint) else ""
        if self.weights == "best" and best:
            state = load_checkpoint(best, map_location="cpu")["state_dict"]
            return {k.removeprefix(NET_PREFIX): v for k, v in state.items() if k.startswith(NET_PREFIX)}
        if self.weights == "best":
            log.warning("weights=best but no best checkpoint was saved: logging the final weights")
        return module.net.state_dict()
