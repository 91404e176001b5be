"""Step ``end_to_end``: the real ``python -m pipeline.train`` (Hydra, MLflow) on generated shards, a minute
or two on a GPU, ending with the paper's 10-crop test of the final weights; then its run is read back.

Data: a fake ImageNet (``data_prep.fake``: real-looking class-coloured photos) sharded by ``data_prep``
exactly as real data is (resize=paper: 256x256 JPEGs). Training: the paper's net at full width, bf16-mixed,
channels_last, ``data.decode=device`` (nvJPEG), on one GPU. The ``--quick`` CPU rehearsal: a 1/16-width net,
a few dozen images, fp32, the same overrides otherwise.

Checked from the MLflow store: the run FINISHED; the final 10-crop and centre-crop errors (``eval/*``) are
logged, in [0, 1], top-5 <= top-1, over the whole val split (``eval/images``); train and val losses are
finite; images/s and the data-wait fraction are logged.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from pathlib import Path

from bench.gpu_check.common import Context, StepResult, verdict


def _sizes(ctx: Context) -> dict[str, int | float | str]:
    if ctx.quick:
        return dict(classes=4, train_per_class=12, val_per_class=4, width=0.0625, batch=16, epochs=1,
                    workers=1, precision="32-true")  # fmt: skip
    workers = min(8, max(1, (os.cpu_count() or 2) - 2))
    # 3,500 images: the fake ImageNet is drawn in one process (~5-10 ms an image), inside the time box
    return dict(classes=50, train_per_class=60, val_per_class=10, width=1.0, batch=128, epochs=5,
                workers=workers, precision="bf16-mixed")  # fmt: skip


def make_shards(work: Path, sizes: dict) -> tuple[Path, float]:
    """The fake ImageNet and its shards under ``work`` (reused if a previous run made them)."""
    from data_prep.fake import make_fake_imagenet
    from data_prep.prep import run_prep

    shards = work / "shards"
    started = time.perf_counter()
    if not (shards / "manifest.json").is_file():
        source = make_fake_imagenet(
            work / "source", classes=sizes["classes"], train_per_class=sizes["train_per_class"],
            val_per_class=sizes["val_per_class"], image_size=(320, 256),
        )  # fmt: skip
        run_prep(source, shards, workers=os.cpu_count() or 1, progress=False)
    return shards, time.perf_counter() - started


def overrides(ctx: Context, sizes: dict, shards: Path, uri: str) -> list[str]:
    run_dir = ctx.work / "end_to_end" / "run"
    return [
        f"data.root={shards}",
        f"data.batch_size={sizes['batch']}",
        f"data.num_workers={sizes['workers']}",
        "data.decode=device",
        "data.shuffle_buffer=500",
        f"model.width={sizes['width']}",
        "model.channels_last=true",
        f"trainer.accelerator={'gpu' if ctx.cuda else 'cpu'}",
        f"trainer.precision={sizes['precision']}",
        f"trainer.max_epochs={sizes['epochs']}",
        "trainer.enable_progress_bar=false",
        f"trainer.log_every_n_steps={1 if ctx.quick else 5}",  # quick: 3 steps an epoch
        "name=gpu_check",
        f"paths.output_dir={run_dir}",
        f"hydra.run.dir={run_dir}",
        f"logger.tracking_uri={uri}",
        "logger.experiment_name=gpu_check",
        f"logger.system_metrics_interval_s={0 if ctx.quick else 5}",
    ]


def read_run(uri: str) -> dict:
    """The newest run of the experiment: status, metrics (last values) and tags."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("gpu_check")
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"])
    run = runs[0]
    return {"run_id": run.info.run_id, "status": run.info.status, "metrics": dict(run.data.metrics),
            "tags": {k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.")}}  # fmt: skip


def check_run(run: dict, val_images: int) -> dict[str, bool]:
    from pipeline.tracking import keys

    metrics = run["metrics"]
    evals = [keys.CENTER_TOP1, keys.CENTER_TOP5, keys.TENCROP_TOP1, keys.TENCROP_TOP5]
    finite = [keys.TRAIN_LOSS, keys.VAL_LOSS, keys.IMAGES_PER_S, keys.DATA_WAIT_FRACTION]
    return {
        "run FINISHED": run["status"] == "FINISHED",
        "eval/* logged, each in [0, 1]": all(0.0 <= metrics.get(key, -1.0) <= 1.0 for key in evals),
        "top-5 <= top-1 (centre and 10-crop)": all(
            metrics.get(five, 2.0) <= metrics.get(one, -1.0)
            for one, five in ((keys.CENTER_TOP1, keys.CENTER_TOP5), (keys.TENCROP_TOP1, keys.TENCROP_TOP5))
        ),
        f"eval/images = the val split's {val_images}": metrics.get(keys.EVAL_IMAGES) == val_images,
        "losses, images/s, data wait logged and finite": all(
            math.isfinite(metrics.get(k, math.nan)) for k in finite
        ),
        "images/s > 0": metrics.get(keys.IMAGES_PER_S, 0.0) > 0,
    }


def run(ctx: Context) -> StepResult:
    sizes = _sizes(ctx)
    work = ctx.work / "end_to_end"
    shards, made_s = make_shards(work, sizes)
    uri = f"sqlite:///{work / 'mlflow.db'}"
    command = [sys.executable, "-m", "pipeline.train", *overrides(ctx, sizes, shards, uri)]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=work, capture_output=True, text=True, check=False)
    train_s = time.perf_counter() - started
    print(done.stdout[-4000:], done.stderr[-8000:], sep="\n", file=sys.stderr)  # into the step's log
    details = {"sizes": sizes, "shards_made_s": round(made_s, 1), "train_command_s": round(train_s, 1),
               "command": " ".join(command[1:]), "returncode": done.returncode}  # fmt: skip
    if done.returncode != 0:
        return StepResult("fail", details, error=done.stderr[-2000:])
    run_record = read_run(uri)
    val_images = sizes["classes"] * sizes["val_per_class"]
    checks = check_run(run_record, val_images)
    details.update(run=run_record, checks=checks)
    return StepResult(verdict(checks), details)
