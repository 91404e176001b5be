"""ImageNet's counts, rehearsed: 1,281,167 train / 50,000 val images in 1,000 classes, scaled with --images.

    python bench/scale.py                                         # the full count (about an hour here)
    python bench/scale.py --images 20000 --classes 100            # a few minutes
    python bench/scale.py --curve 2000,10000,20000 --classes 100  # growth curves: log-log slope per figure
    python bench/scale.py --curve 12812,128117,1281167 --team-server   # the full count, its curve, the server

Per count, each stage in a fresh process (bench/scale_stages.py): a generated tree in ImageNet's layout
(bench/scale_tree.py), prep (wall, images/s, parent/worker peak RSS, manifest size, shards), data_prep.verify,
one training-loader epoch of rank 0 reading every key and label without decoding, the span tables of 1, 8, 64
and 512 ranks x 8 workers (exactly once, equal steps, compute time, a worker's first sample), a 90% resume
position for 64 ranks and its read-back, and a study of --runs runs x 90 epochs compared by
pipeline.compare (every run counted), with --team-server also on the PostgreSQL team server
(scripts/tracking_server.sh). Writes one JSON record (--json) and prints a table; with several
counts, each figure's log-log slope against the count (1: linear, 2: quadratic).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from rich.console import Console
from rich.table import Table

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(HERE), str(REPO)]  # run from anywhere, without installing

from scale_tree import IMAGENET_CLASSES, IMAGENET_TRAIN, make_tree  # noqa: E402

RANKS = (1, 8, 64, 512)
FULL_RUNS = 1_000


def stage(name: str, **arguments) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, str(HERE / "scale_stages.py"), name, json.dumps(arguments)],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"stage {name} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["growth_mib"] = result["rss_mib"] - result["start_rss_mib"]  # the stage's own, imports excluded
    return result


def default_runs(images: int) -> int:
    """1,000 runs at ImageNet's count, in proportion below it (at least 8: two seeds of four groups)."""
    return max(8, round(FULL_RUNS * images / IMAGENET_TRAIN))


@contextlib.contextmanager
def team_server(folder: Path) -> Iterator[str]:
    """scripts/tracking_server.sh (mlflow on PostgreSQL, 127.0.0.1) in a fresh ``folder``; yields its URL."""
    script = REPO / "scripts" / "tracking_server.sh"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    with socket.socket() as probe:  # a free port for the server
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "PYTHON": sys.executable, "TRACKING_SERVER_PORT": str(port)}
    started = subprocess.run(
        ["bash", str(script), "start", str(folder)], env=env, capture_output=True, text=True, check=False
    )
    try:
        if started.returncode != 0:
            raise RuntimeError(f"tracking_server.sh start failed:\n{started.stderr[-3000:]}")
        yield started.stdout.strip().splitlines()[-1]
    finally:
        subprocess.run(["bash", str(script), "stop", str(folder)], env=env, capture_output=True, check=False)


def rehearse(work: Path, images: int, classes: int, runs: int, workers: int, server: bool = False) -> dict:
    say = Console(stderr=True).print
    tree = make_tree(work / f"source-{images}-{classes}", images, classes)
    say(f"[{images}] tree: {tree['train']} train + {tree['val']} val in {classes} classes")
    out = work / f"prep-{images}-{classes}"
    shutil.rmtree(out, ignore_errors=True)
    record: dict = {"images": images, "classes": classes, "tree": tree}
    record["prep"] = stage(
        "prep", source=str(work / f"source-{images}-{classes}"), out=str(out), workers=workers
    )
    say(f"[{images}] prep: {record['prep']['seconds']:.1f} s")
    record["verify"] = stage("verify", out=str(out))
    record["loader"] = stage("loader", out=str(out))
    say(f"[{images}] verify + loader epoch done")
    record["spans"] = {str(r): stage("spans", out=str(out), ranks=r) for r in RANKS}
    record["resume"] = stage("resume", out=str(out), ranks=64)
    store = work / f"store-{images}-{runs}"
    shutil.rmtree(store, ignore_errors=True)
    record["tracking"] = stage("tracking", root=str(store), runs=runs)
    say(f"[{images}] spans, resume, tracking ({runs} runs) done")
    if server:
        # the folder must be reachable by PostgreSQL's own user when run as root: not under a mode-700 home
        with team_server(Path(tempfile.gettempdir()) / f"alexnet-scale-server-{images}") as url:
            record["server"] = stage("tracking", root=str(store / "server-report"), runs=runs, uri=url)
        say(f"[{images}] team server ({runs} runs) done")
    record["checks"] = checks(record)
    return record


def checks(record: dict) -> dict:
    """The properties that must hold at every count (the figures themselves are measured, not asserted)."""
    spans = record["spans"].values()
    return {
        "verify_clean": record["verify"]["problems"] == 0,
        "loader_exactly_once": record["loader"]["exactly_once"],
        "spans_exactly_once": all(s["exactly_once"] for s in spans),
        "spans_equal_steps": all(s["equal_steps"] for s in spans),
        "resume_at_position": record["resume"]["at_position"],
        "all_runs_counted": all(
            record[store]["all_counted"] for store in ("tracking", "server") if store in record
        ),
    }


# (label, path in the record): the figures shown per count, and fitted against it
FIGURES = (
    ("prep s", ("prep", "seconds")),
    ("prep img/s", ("prep", "images_per_s")),
    ("prep parent RSS MiB", ("prep", "rss_mib")),
    ("prep parent growth MiB", ("prep", "growth_mib")),
    ("prep workers RSS MiB", ("prep", "workers_rss_mib")),
    ("prep workers USS MiB", ("prep", "workers_uss_mib")),
    ("manifest KiB", ("prep", "manifest_bytes")),
    ("shards", ("prep", "shards")),
    ("verify s", ("verify", "seconds")),
    ("loader epoch s", ("loader", "seconds")),
    ("loader growth MiB", ("loader", "growth_mib")),
    ("spans 512x8 growth MiB", ("spans", "512", "growth_mib")),
    ("spans 64x8 s", ("spans", "64", "seconds")),
    ("spans 512x8 s", ("spans", "512", "seconds")),
    ("512x8 first sample s", ("spans", "512", "first_sample_s")),
    ("resume load s", ("resume", "load_s")),
    ("resume read-back s", ("resume", "read_back_s")),
    ("store fill s", ("tracking", "fill_s")),
    ("compare s", ("tracking", "compare_s")),
    ("tracking growth MiB", ("tracking", "growth_mib")),
    ("server fill s", ("server", "fill_s")),
    ("server compare s", ("server", "compare_s")),
)


def figure(record: dict, path: tuple[str, ...]) -> float:
    value = record
    for part in path:
        value = value[part]
    return float(value) / (1024 if path[-1] == "manifest_bytes" else 1)


def slope(xs: list[float], ys: list[float]) -> float | None:
    """Least-squares slope of log y against log x: ~1 grows linearly, ~2 quadratically, ~0 flat."""
    points = [(math.log(x), math.log(y)) for x, y in zip(xs, ys, strict=True) if x > 0 and y > 0]
    if len(points) < 2:
        return None
    mx, my = sum(p[0] for p in points) / len(points), sum(p[1] for p in points) / len(points)
    var = sum((p[0] - mx) ** 2 for p in points)
    return sum((p[0] - mx) * (p[1] - my) for p in points) / var if var else None


def print_table(records: list[dict]) -> None:
    table = Table(title="bench/scale.py (checks: " + ", ".join(
        f"{k}={all(r['checks'][k] for r in records)}" for k in records[0]["checks"]) + ")")  # fmt: skip
    table.add_column("figure")
    for record in records:
        table.add_column(f"{record['images']:,} img", justify="right")
    table.add_column("log-log slope", justify="right")
    counts = [float(r["images"]) for r in records]
    for label, path in FIGURES:
        if not all(path[0] in r for r in records):  # the team server's rows only when it ran
            continue
        values = [figure(r, path) for r in records]
        fitted = slope(counts, values)
        table.add_row(label, *(f"{v:.3g}" for v in values), "-" if fitted is None else f"{fitted:.2f}")
    Console().print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=IMAGENET_TRAIN, help="train images (val in proportion)")
    parser.add_argument("--classes", type=int, default=IMAGENET_CLASSES)
    parser.add_argument("--curve", default="", help="comma-separated counts to run (overrides --images)")
    parser.add_argument("--runs", type=int, default=None, help="tracked runs (default: 1,000 x count/1.28M)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="prep workers")
    parser.add_argument(
        "--team-server", action="store_true",
        help="also fill and compare the study on scripts/tracking_server.sh (PostgreSQL; root installs it)",
    )  # fmt: skip
    parser.add_argument("--work", type=Path, default=REPO / ".bench" / "scale", help="trees, shards, stores")
    parser.add_argument("--json", type=Path, default=None, help="the JSON record (default: WORK/scale.json)")
    args = parser.parse_args(argv)
    counts = [int(c) for c in args.curve.split(",") if c.strip()] or [args.images]
    if any(c < args.classes for c in counts):
        parser.error(f"every count must be at least --classes {args.classes}")
    start = time.perf_counter()
    records = [
        rehearse(args.work, c, args.classes, args.runs or default_runs(c), args.workers, args.team_server)
        for c in counts
    ]
    result = {"command": " ".join(sys.argv), "seconds": time.perf_counter() - start, "counts": records}
    path = args.json or args.work / "scale.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1))
    print_table(records)
    print(
        json.dumps(
            {
                "json": str(path),
                "checks": {k: all(r["checks"][k] for r in records) for k in records[0]["checks"]},
            }
        )
    )
    return 0 if all(all(r["checks"].values()) for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
