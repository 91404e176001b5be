"""conf/hydra/launcher/slurm*.yaml compose with the trainer group as docs/cluster.md says (no cluster)."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from tests.helpers.paths import CONF_DIR


def _launcher(*overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=list(overrides), return_hydra_config=True)
    launcher = cfg.hydra.launcher
    OmegaConf.resolve(launcher)
    return launcher


def test_slurm_resources_follow_the_trainer() -> None:
    launcher = _launcher("hydra/launcher=slurm", "trainer=ddp", "trainer.devices=8", "trainer.num_nodes=4")
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node) == (4, 8, 8)


def test_slurm_requeues_through_lightnings_signal() -> None:
    launcher = _launcher("hydra/launcher=slurm", "hydra.launcher.signal_delay_s=300")
    assert launcher.additional_parameters.signal == "USR1@300"
    assert launcher.additional_parameters.requeue is True


def test_single_device_trainers_get_one_task() -> None:
    assert _launcher("hydra/launcher=slurm").tasks_per_node == 1
    split = _launcher("hydra/launcher=slurm", "trainer=model_parallel")
    assert (split.tasks_per_node, split.nodes) == (1, 1)


def test_local_variant_is_cpu_only_with_a_loopback_master() -> None:
    launcher = _launcher("hydra/launcher=slurm_local", "trainer=ddp")
    assert launcher.partition == "local"
    assert launcher.gpus_per_node is None
    assert launcher.tasks_per_node == 2
    assert "export MASTER_ADDR=127.0.0.1" in launcher.setup


def test_slurm_sweeps_prepare_the_tracking_store_first(tmp_path: Path) -> None:
    """Concurrent jobs must find the store made: the callback creates tables and experiment before them."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            config_name="train",
            overrides=["hydra/launcher=slurm", f"logger.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}"],
            return_hydra_config=True,
        )
    callback = instantiate(cfg.hydra.callbacks.tracking_store)
    callback.on_multirun_start(config=cfg)
    (experiment,) = MlflowClient(cfg.logger.tracking_uri).search_experiments(filter_string="name = 'alexnet'")
    callback.on_multirun_start(config=cfg)  # a second sweep into the same store reuses the experiment
    assert MlflowClient(cfg.logger.tracking_uri).get_experiment_by_name("alexnet").experiment_id == (
        experiment.experiment_id
    )
