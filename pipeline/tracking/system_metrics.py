"""MLflow's system metrics for a training run: CPU and memory (``system/cpu_utilization_percentage``,
``system/system_memory_usage_percentage``), disk and network, and per GPU
``system/gpu_<i>_utilization_percentage`` and ``system/gpu_<i>_memory_usage_percentage`` where NVML
(``nvidia-ml-py``) finds GPUs. MlflowClient runs, which the pipeline writes to, do not start MLflow's monitor
themselves; this callback does, on global rank 0.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer

from pipeline.tracking.writer import run_writer


class SystemMetrics(Callback):
    """MLflow's system metrics for the run, sampled every ``interval_s`` seconds by a thread on global rank 0;
    ``interval_s`` 0 or None: off. ``MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL`` overrides the interval."""

    def __init__(self, interval_s: float | None = 10.0) -> None:
        self.interval_s = interval_s
        self._monitor: Any = None

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        writer = run_writer(trainer)
        if not self.interval_s or not trainer.is_global_zero or writer is None or writer.run_id is None:
            return
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        self._monitor = SystemMetricsMonitor(
            writer.run_id,
            sampling_interval=self.interval_s,
            resume_logging=True,  # a resumed run continues its system/* steps
            tracking_uri=writer.tracking_uri,
        )
        self._monitor.start()

    def _stop(self) -> None:
        if self._monitor is not None:
            self._monitor.finish()
            self._monitor = None

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._stop()

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        self._stop()
