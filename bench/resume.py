"""Resume benchmark: getting a loader worker back to its position mid-epoch, against decoding the samples.

A resumed job's workers read their share of the epoch back to the checkpointed sample through the tar reader
and the shuffle buffer only (``TrainStream``: no JPEG decoding). This times that read-back for ``--samples``
samples against pulling the same samples through decode + crop + flip (what a loader without a position
would have to redo, or what re-training the lost steps would at least cost in input), side by side in one
process, alternating, best of ``--rounds``; one thread (one worker's core). Images as bench/loader.py makes
them (256x256 JPEGs, crops of real photos), read again and again as one worker's share.

    .venv/bin/python bench/resume.py [--images 512] [--samples 10000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loader import make_images, make_shards  # noqa: E402  (bench/ is not a package)

from pipeline.data import ShardDataModule  # noqa: E402
from pipeline.data.streams import _skip  # noqa: E402
from pipeline.data.transforms import sample_draws  # noqa: E402

IMAGENET_TRAIN = 1_281_167


def _stream(root: Path) -> tuple:
    dm = ShardDataModule(root, batch_size=128, num_workers=0, shuffle_buffer=2000)
    stream = dm.train_dataloader().dataset
    return stream, stream.skips.handler(0)


def time_read_back(root: Path, samples: int) -> float:
    stream, handler = _stream(root)
    start = time.perf_counter()
    handler.muted = True
    _skip(stream._drawn(0, 0, handler), samples)
    return time.perf_counter() - start


def time_decode(root: Path, samples: int) -> float:
    stream, handler = _stream(root)
    drawn, start = stream._drawn(0, 0, handler), time.perf_counter()
    done = 0
    while done < samples:
        sample = next(drawn)
        if sample is not None:
            stream.transform(sample, sample_draws(0, done))
            done += 1
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--samples", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="bench-resume-") as tmp:
        root = make_shards(Path(tmp), make_images(Path(tmp), args.images))
        time_read_back(root, 1000), time_decode(root, 200)  # warm-up: page cache, lazy imports
        best = {"read back (resume)": float("inf"), "decode + crop (no position)": float("inf")}
        for _ in range(args.rounds):
            best["read back (resume)"] = min(best["read back (resume)"], time_read_back(root, args.samples))
            decode = time_decode(root, args.samples)
            best["decode + crop (no position)"] = min(best["decode + crop (no position)"], decode)
    per_10k = {name: seconds * 10_000 / args.samples for name, seconds in best.items()}
    print(
        f"{args.samples} samples passed over by one worker ({args.images} distinct 256x256 JPEGs), 1 thread"
    )
    for name, seconds in per_10k.items():
        print(f"  {name:30s} {seconds:7.2f} s per 10,000 samples")
    ratio = per_10k["decode + crop (no position)"] / per_10k["read back (resume)"]
    print(f"  read back is {ratio:.1f}x faster than decoding")
    skip = per_10k["read back (resume)"] / 10_000
    for ranks, workers in ((1, 4), (8, 8), (32, 8)):
        share = IMAGENET_TRAIN / (ranks * workers)
        print(
            f"  ImageNet, {ranks} ranks x {workers} workers: resuming at an epoch's end reads back "
            f"{share:,.0f} samples per worker, {share * skip:.1f} s (workers in parallel)"
        )


if __name__ == "__main__":
    main()
