"""Tracking store benchmark: runs created per second and metric writes per second from N concurrent jobs,
a sqlite store (``pipeline.tracking.shared_store``, WAL) against the team server
(``scripts/tracking_server.sh``: ``mlflow server`` on PostgreSQL), side by side in one run.

The store and experiment exist before timing. Each of ``--jobs`` processes (started together) opens the
store as a training job does (``prepare_store``: lock, WAL, experiment lookup), creates
``--runs`` runs (``shared_store.create_run``: tags and ~150 params, as a training run has), then logs
``--steps`` steps of 6 metrics into its last run, one ``log_batch`` per step (what the outbox sends while it
keeps up). Runs/s and writes/s are totals over all jobs, from the first job's start to the last job's end.

    .venv/bin/python bench/tracking_store.py [--jobs 4] [--runs 5] [--steps 100]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.tracking.shared_store import create_run, prepare_store  # noqa: E402

METRICS = ("train/loss", "train/top1_error", "lr", "epoch", "throughput/images_per_s", "data/skipped_samples")
PARAMS = {f"group{g}.setting{s}": g * s for g in range(15) for s in range(10)}


def _job(uri: str, runs: int, steps: int, start: multiprocessing.Event, out: multiprocessing.Queue) -> None:
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    start.wait()
    began = time.perf_counter()
    prepare_store(uri, "bench")
    client = MlflowClient(uri)
    run_ids = [create_run(client, "bench", f"run{i}", {"kind": "bench"}, PARAMS) for i in range(runs)]
    created = time.perf_counter()
    for step in range(steps):
        now = int(time.time() * 1000)
        client.log_batch(run_ids[-1], metrics=[Metric(key, float(step), now, step) for key in METRICS])
    out.put((began, created, time.perf_counter()))


def measure(uri: str, jobs: int, runs: int, steps: int) -> tuple[float, float]:
    prepare_store(uri, "bench")  # the schema exists before timing (the server creates its own at start)
    context = multiprocessing.get_context("spawn")
    start, out = context.Event(), context.Queue()
    processes = [context.Process(target=_job, args=(uri, runs, steps, start, out)) for _ in range(jobs)]
    for process in processes:
        process.start()
    time.sleep(3)  # every process imported MLflow: then they start together
    start.set()
    times = [out.get(timeout=600) for _ in processes]
    for process in processes:
        process.join()
    began = min(t[0] for t in times)
    runs_per_s = jobs * runs / (max(t[1] for t in times) - began)
    writes_per_s = jobs * steps * len(METRICS) / max(t[2] - t[1] for t in times)
    return runs_per_s, writes_per_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--steps", type=int, default=100)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-tracking-", dir="/tmp"))
    root.chmod(0o755)  # as root, PostgreSQL runs as the postgres user: it must reach the folder
    script = REPO / "scripts" / "tracking_server.sh"
    env = {
        **os.environ,
        "PYTHON": sys.executable,
        "TRACKING_SERVER_PORT": "5071",
        "TRACKING_SERVER_WORKERS": "4",
    }
    url = subprocess.run(
        ["bash", str(script), "start", str(root / "server")],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()[-1]
    try:
        rows = [
            (
                "sqlite (WAL, file lock)",
                measure(f"sqlite:///{root / 'mlflow.db'}", args.jobs, args.runs, args.steps),
            ),
            ("mlflow server on PostgreSQL", measure(url, args.jobs, args.runs, args.steps)),
        ]
    finally:
        subprocess.run(["bash", str(script), "stop", str(root / "server")], env=env, check=False)
    print(
        f"{args.jobs} jobs at once, {args.runs} runs each, {args.steps} steps x {len(METRICS)} metrics each"
    )
    print("| store | runs created/s | metric writes/s |\n|---|---|---|")
    for name, (runs_per_s, writes_per_s) in rows:
        print(f"| {name} | {runs_per_s:.1f} | {writes_per_s:.0f} |")
    (sqlite_runs, sqlite_writes), (server_runs, server_writes) = (row[1] for row in rows)
    print(
        f"server/sqlite: runs {server_runs / sqlite_runs:.2f}x, writes {server_writes / sqlite_writes:.2f}x"
    )


if __name__ == "__main__":
    main()
