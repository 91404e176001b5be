"""The tracking stage of bench/scale.py: a study of N runs x 90 epochs in a real MLflow store, compared.

Each run holds what a training run logs per epoch (losses, errors, lr, throughput, data wait, epoch) and the
final test-protocol metrics, as FINISHED runs tagged with an experiment and a seed; they are bulk-written with
``MlflowClient.log_batch`` (one call per run), then ``pipeline.compare`` reads them all back.
"""

from __future__ import annotations

import time
from pathlib import Path

from mlflow.entities import Metric, RunTag
from mlflow.tracking import MlflowClient

from pipeline.compare import compare
from pipeline.tracking import keys

EXPERIMENT = "scale"
STUDY = "scale-study"
EPOCHS = 90
PER_EPOCH = (
    keys.TRAIN_LOSS, keys.TRAIN_EPOCH_TOP1, keys.VAL_LOSS, keys.VAL_TOP1, keys.VAL_TOP5, keys.LEARNING_RATE,
    keys.IMAGES_PER_S, keys.DATA_WAIT_FRACTION, keys.EPOCH,
)  # fmt: skip
FINAL = (keys.CENTER_TOP1, keys.CENTER_TOP5, keys.TENCROP_TOP1, keys.TENCROP_TOP5, keys.EVAL_IMAGES)
GROUPS = ("baseline", "no_lrn", "no_dropout", "no_overlap")
MAX_BATCH = 1_000  # log_batch's limit on metrics per call


def _metrics(run: int) -> list[Metric]:
    now = int(time.time() * 1000)
    rows = []
    for epoch in range(EPOCHS):
        error = 0.9 * (1 - epoch / (EPOCHS + 10)) + 0.001 * (run % 7)
        values = (
            4 * error,
            error,
            4 * error,
            error,
            error / 2,
            0.01 * 0.1 ** (epoch // 30),
            1e3,
            0.05,
            epoch,
        )
        rows += [Metric(key, float(v), now, epoch) for key, v in zip(PER_EPOCH, values, strict=True)]
    final = 0.4 + 0.001 * (run % 7)
    rows += [
        Metric(key, v, now, EPOCHS)
        for key, v in zip(FINAL, (final, final / 2, final - 0.02, 0.17, 5e4), strict=True)
    ]
    return rows


def fill_store(uri: str, runs: int) -> float:
    """``runs`` finished runs in experiment ``scale``; returns the seconds it took."""
    client = MlflowClient(uri)
    experiment_id = client.create_experiment(EXPERIMENT)
    start = time.perf_counter()
    for run in range(runs):
        tags = {
            keys.TAG_EXPERIMENT: GROUPS[run % len(GROUPS)],
            keys.TAG_SEED: str(run),
            keys.TAG_STUDY: STUDY,
        }
        created = client.create_run(experiment_id, run_name=f"run-{run:05d}")
        run_id = created.info.run_id
        metrics = _metrics(run)
        client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()], metrics=metrics[:MAX_BATCH])
        for first in range(MAX_BATCH, len(metrics), MAX_BATCH):
            client.log_batch(run_id, metrics=metrics[first : first + MAX_BATCH])
        client.set_terminated(run_id, status="FINISHED")
    return time.perf_counter() - start


def tracking_stage(root: str, runs: int, uri: str | None = None) -> dict:
    """Fills a fresh store (sqlite under ``root`` unless ``uri``) and runs the comparison over all of it."""
    folder = Path(root)
    folder.mkdir(parents=True, exist_ok=True)
    uri = uri or f"sqlite:///{folder / 'mlflow.db'}"
    fill = fill_store(uri, runs)
    start = time.perf_counter()
    result = compare(uri, EXPERIMENT, STUDY, folder / "report", log_report=False)
    seconds = time.perf_counter() - start
    counted = len(result.study.usable) + len(result.study.set_aside)
    return {
        "runs": runs, "epochs": EPOCHS, "fill_s": fill, "compare_s": seconds,
        "usable": len(result.study.usable), "counted": counted, "all_counted": counted == runs,
        "groups": len(result.rows),
    }  # fmt: skip
