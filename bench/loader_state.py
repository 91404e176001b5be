"""Loader throughput of this checkout against an earlier revision, side by side: what keeping the loader's
position costs (the batch's position tag, per-sample draws from (seed, epoch, rank, worker, index)).

The shard path of bench/loader.py (tar read, shuffle buffer, decode, crop + flip, batch; num_workers=0 and one
thread: one DataLoader worker's rate) over the same images, in two processes: this checkout and ``--against
REV`` (its pipeline/ and data_prep/ from ``git archive``). They time epochs in turn, and the ratio of each
adjacent pair is taken (the two share the machine's load at that moment): the median and quartiles of those
ratios are reported. Rates are images per CPU-second of the timing process: on a shared machine the wall
clock mostly measures the neighbours.

    .venv/bin/python bench/loader_state.py --against 2e452aa [--images 512] [--pairs 40]
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loader import make_images, make_shards  # noqa: E402  (bench/ is not a package)

REPO = Path(__file__).resolve().parents[1]
TIMER = """
import sys, time, torch
torch.set_num_threads(1)
from pipeline.data import ShardDataModule
loader = ShardDataModule(sys.argv[1], batch_size=int(sys.argv[2]), num_workers=0).train_dataloader()
for _ in loader:  # warm-up: page cache, lazy imports
    pass
print("ready", flush=True)
for _ in sys.stdin:  # one timed epoch per line read
    start, seen = time.process_time(), 0
    for images, _labels in loader:
        seen += images.shape[0]
    print(seen / (time.process_time() - start), flush=True)
"""


class Timer:
    """A process with this tree's loader that times one epoch (images per CPU-second) per request."""

    def __init__(self, tree: Path, root: Path, batch_size: int) -> None:
        env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1"}
        self.process = subprocess.Popen(
            [sys.executable, "-c", TIMER, str(root), str(batch_size)],
            env=env, cwd=tree, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self.process.stdout.readline().strip() == "ready"

    def epoch(self) -> float:
        self.process.stdin.write("go\n")
        self.process.stdin.flush()
        return float(self.process.stdout.readline())

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait()


def export(revision: str, into: Path) -> Path:
    archive = subprocess.run(
        ["git", "archive", revision, "pipeline", "data_prep"], cwd=REPO, capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--against", required=True, help="git revision to compare with (e.g. main's commit)")
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--pairs", type=int, default=40, help="timed epochs per tree, in adjacent pairs")
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-loader-state-") as tmp:
        root = make_shards(Path(tmp), make_images(Path(tmp), args.images))
        before = Timer(export(args.against, Path(tmp) / "before"), root, args.batch_size)
        now = Timer(REPO, root, args.batch_size)
        rates: dict[str, list[float]] = {args.against: [], "this checkout": []}
        for pair in range(
            args.pairs
        ):  # adjacent epochs share the machine's load; each goes first half the time
            order = [(args.against, before), ("this checkout", now)][:: 1 if pair % 2 else -1]
            for name, timer in order:
                rates[name].append(timer.epoch())
        before.close(), now.close()
    ratios = sorted(n / b for b, n in zip(rates[args.against], rates["this checkout"], strict=True))
    quartiles = ratios[len(ratios) // 4], ratios[len(ratios) // 2], ratios[3 * len(ratios) // 4]
    print(f"{args.images} images 256x256 -> 227 crops, batch {args.batch_size}, 1 thread, no workers")
    for name, values in rates.items():
        median = statistics.median(values)
        print(f"  {name:15s} {median:8.0f} images per CPU-second (median of {len(values)} epochs)")
    low, middle, high = quartiles
    print(f"  this checkout / {args.against}: {middle:.3f}x (quartiles {low:.3f}-{high:.3f})")


if __name__ == "__main__":
    main()
