"""Loader benchmark: decode + augment images/s per worker, shard pipeline vs ImageFolder + PIL, side by side.

Both paths run in this one process with num_workers=0 and one torch thread: the rate one DataLoader worker
(one core) sustains. The images are the same ~500 256x256 JPEGs (random crops of foolbox's ImageNet photos),
written once as class folders and once as WebDataset shards with a manifest.

- baseline: torchvision ImageFolder + PIL, the classic transforms RandomCrop(227), RandomHorizontalFlip,
  ToTensor, Normalize, batched by the DataLoader;
- shards: pipeline.data.ShardDataModule's train loader (tar read, shuffle buffer, decode_jpeg, crop + flip
  on uint8, batch): what a worker does. A second row adds the DataModule's per-batch float conversion + PCA
  lighting + mean subtraction on the CPU; in training that runs once per batch on the device (free on a GPU),
  in the main process, not in the workers.
- data.verify (each shard checked against the manifest's sha256, pipeline/data/shard_checks.py), side by side
  with it off: the first pass over the shards, where every shard is read whole and hashed (its verdicts are
  reset before every timed epoch), and a later pass, where the verdicts are kept and nothing is hashed. Their
  ratio to the unchecked row is the median over rounds of images per CPU-second of this process, each round
  timing the rows in turn, in a shuffled order: on a shared machine the neighbours' load moves the wall clock,
  not that. A second unchecked loader (the control row) shows how far two identical rows differ.

    .venv/bin/python bench/loader.py [--images 512] [--rounds 5] [--batch-size 128]
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import random
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch
import webdataset as wds
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from data_prep.manifest import ClassInfo, Manifest, ShardInfo, SplitInfo, Stats, save_manifest
from pipeline.data import ShardDataModule

SIDE, CROP, CLASSES, SHARD_SAMPLES = 256, 227, 10, 128


def _photos() -> list[Path]:
    spec = importlib.util.find_spec("foolbox")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("bench/loader.py needs foolbox's sample photos: pip install foolbox --no-deps")
    photos = sorted(Path(spec.submodule_search_locations[0], "data").glob("imagenet_*.jpg"))
    if not photos:
        raise SystemExit("no foolbox/data/imagenet_*.jpg found")
    return photos


def make_images(out: Path, count: int, seed: int = 0) -> list[tuple[Path, int]]:
    """``count`` 256x256 JPEGs (quality 90), each a random crop of a random photo, in CLASSES folders."""
    rng = random.Random(seed)
    sources = [Image.open(p).convert("RGB") for p in _photos()]
    images = []
    for index in range(count):
        photo = rng.choice(sources)
        side = rng.randint(min(photo.size) // 2, min(photo.size))
        left, top = rng.randint(0, photo.width - side), rng.randint(0, photo.height - side)
        image = photo.crop((left, top, left + side, top + side)).resize((SIDE, SIDE), Image.BICUBIC)
        label = index % CLASSES
        path = out / "folders" / f"c{label:02d}" / f"img{index:05d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path, quality=90)
        images.append((path, label))
    return images


def make_shards(out: Path, images: list[tuple[Path, int]]) -> Path:
    """The same JPEG bytes as WebDataset shards + a manifest with the images' real mean and PCA."""
    root = out / "shards"
    (root / "train").mkdir(parents=True)
    shards, pixels = [], []
    for start in range(0, len(images), SHARD_SAMPLES):
        name = f"train/train-{start // SHARD_SAMPLES:06d}.tar"
        chunk = images[start : start + SHARD_SAMPLES]
        with wds.TarWriter(str(root / name), mtime=0) as sink:  # as data_prep writes: no pax headers
            for path, label in chunk:
                meta = b'{"wnid": "n%08d", "source_size": [256, 256]}' % label
                sink.write(
                    {"__key__": path.stem, "jpg": path.read_bytes(), "cls": str(label).encode(), "json": meta}
                )
                pixels.append(np.asarray(Image.open(path), dtype=np.float64)[::8, ::8].reshape(-1, 3))
        data = (root / name).read_bytes()
        shards.append(ShardInfo(name, len(chunk), len(data), hashlib.sha256(data).hexdigest()))
    flat = np.concatenate(pixels)
    values, vectors = np.linalg.eigh(np.cov(flat, rowvar=False))
    order = np.argsort(values)[::-1]
    stats = Stats(
        len(images),
        flat.mean(0).tolist(),
        flat.std(0).tolist(),
        values[order].tolist(),
        vectors[:, order].T.tolist(),
    )
    classes = [ClassInfo(i, f"n{i:08d}", f"class {i}") for i in range(CLASSES)]
    save_manifest(Manifest(root, classes, {"train": SplitInfo(len(images), shards)}, stats))
    return root


def time_epoch(batches: Iterable, finish: Callable[[torch.Tensor], torch.Tensor]) -> tuple[int, float, float]:
    """(images, wall seconds, CPU seconds of this process) for one pass."""
    start, cpu, seen = time.perf_counter(), time.process_time(), 0
    for images, _labels in batches:
        seen += finish(images).shape[0]
    return seen, time.perf_counter() - start, time.process_time() - cpu


def sha256_rate(megabytes: int = 64) -> float:
    """Bytes per CPU-second that hashlib's sha256 sustains here (what data.verify's first pass adds)."""
    data = random.Random(0).randbytes(megabytes << 20)
    start = time.process_time()
    hashlib.sha256(data).digest()
    return len(data) / (time.process_time() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=5, help="alternating timed epochs per path (best kept)")
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()
    torch.set_num_threads(1)  # one DataLoader worker = one core

    with tempfile.TemporaryDirectory(prefix="bench-loader-") as tmp:
        images = make_images(Path(tmp), args.images)
        root = make_shards(Path(tmp), images)
        settings = {"batch_size": args.batch_size, "num_workers": 0}
        dm = ShardDataModule(root, verify="off", **settings)
        checked = ShardDataModule(root, verify="skip", **settings)
        mean = (dm.mean / 255).tolist()
        classic = transforms.Compose(
            [
                transforms.RandomCrop(CROP),
                transforms.RandomHorizontalFlip(),
                transforms.ToTensor(),
                transforms.Normalize(mean, [0.229, 0.224, 0.225]),
            ]
        )
        folder = datasets.ImageFolder(str(Path(tmp) / "folders"), transform=classic)
        keep = lambda: None  # noqa: E731
        as_is = lambda x: x  # noqa: E731
        normalise = lambda x: dm.normalize(x, train=True)  # noqa: E731
        forget = checked.shard_checks.verdicts.zero_
        paths = {
            "ImageFolder + PIL": (DataLoader(folder, batch_size=args.batch_size, shuffle=True), as_is, keep),
            "shards, uint8 batches": (dm.train_dataloader(), as_is, keep),
            "shards + batch normalise on CPU": (dm.train_dataloader(), normalise, keep),
            "shards, verify: first pass": (checked.train_dataloader(), as_is, forget),
            "shards, verify: verified": (checked.train_dataloader(), as_is, keep),
            "shards, unchecked (control)": (
                ShardDataModule(root, verify="off", **settings).train_dataloader(),
                as_is,
                keep,
            ),
        }
        for loader, finish, reset in paths.values():  # warm-up: page cache, lazy imports
            reset()
            time_epoch(loader, finish)
        best = dict.fromkeys(paths, 0.0)
        ratios: dict[str, list[float]] = {name: [] for name in paths}  # against the unchecked row, same round
        for round_ in range(args.rounds):
            rates = {}
            order = list(paths)
            random.Random(round_).shuffle(order)  # no row always runs after the same one
            for name in order:
                loader, finish, reset = paths[name]
                reset()  # the first-pass row: every shard unchecked again, hashed as it is read
                seen, seconds, cpu = time_epoch(loader, finish)
                rates[name] = seen / cpu  # per CPU-second: the neighbours on a shared machine do not count
                best[name] = max(best[name], seen / seconds)
            for name, rate in rates.items():
                ratios[name].append(rate / rates["shards, uint8 batches"])
        shard_bytes = sum(path.stat().st_size for path in (root / "train").glob("*.tar"))
    hash_rate = sha256_rate()

    baseline = best["ImageFolder + PIL"]
    print(
        f"{args.images} images {SIDE}x{SIDE} -> {CROP} crops, batch {args.batch_size}, 1 thread, no workers; "
        f"{shard_bytes / args.images / 1024:.0f} KiB of shard per image; sha256 {hash_rate / 1e6:.0f} MB per "
        f"CPU-second: {shard_bytes / args.images / hash_rate * 1e6:.0f} us per image"
    )
    for name, rate in best.items():
        median = statistics.median(ratios[name])
        against = (
            f"   {median:5.3f}x of unchecked per CPU-second (median of rounds)"
            if "verify" in name or "control" in name
            else ""
        )
        print(f"  {name:32s} {rate:8.0f} images/s   {rate / baseline:5.2f}x{against}")


if __name__ == "__main__":
    main()
