"""One GPU, side by side: is the paper's net input-bound, and which loader feeds it?

Rows, each in fp32 and bf16-mixed, each the paper's AlexNet (SGD step, batch 128 of 227 crops, PCA lighting
and mean subtraction per batch on the device):

- compute only: one synthetic uint8 batch already on the GPU, over and over: the ceiling;
- data.decode=workers with 4, 8 and 16 DataLoader workers (decode + crop + flip in the workers);
- data.decode=device: 4 workers read JPEG bytes, the GPU decodes the batch (nvJPEG through torchvision);
- the two loaders alone (no training step): how fast each can feed at most.

Images/s and the data-wait fraction (host time between steps / wall time, as throughput/data_wait_fraction in
a run). It writes its own shards first (256x256 JPEGs at quality 90, ~24 KB each like ImageNet resized to 256,
1/f-noise textures: no data set needed) under .bench/gpu/ and reuses them on the next run.

    python bench/gpu.py                         # a GPU machine: ~2-4 minutes
    python bench/gpu.py --device cpu --quick    # the same code on a CPU, in a few minutes (a smoke test)

Needs torch, torchvision, numpy, pillow, lightning and the project (run it from the repository root); and
webdataset, which the loader's pipeline stages use: where it is not installed, put its wheel and braceexpand's
in .bench/wheels/ (``pip download --no-deps -d .bench/wheels webdataset==1.0.2 braceexpand``): pure-Python
wheels import from there as they are.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tarfile
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
try:
    import webdataset  # noqa: F401
except ImportError:  # a bare-torch GPU machine: the wheels carried in .bench/wheels/ import as they are
    sys.path[1:1] = [str(wheel) for wheel in sorted((REPO / ".bench" / "wheels").glob("*.whl"))]
    try:
        import webdataset  # noqa: F401
    except ImportError:
        raise SystemExit(
            "bench/gpu.py needs webdataset: pip install webdataset==1.0.2, or put its wheel and braceexpand's"
            " in .bench/wheels/ (pip download --no-deps -d .bench/wheels webdataset==1.0.2 braceexpand)"
        ) from None

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from PIL import Image  # noqa: E402

from data_prep.manifest import (  # noqa: E402
    SAMPLE_IMAGE,
    SAMPLE_LABEL,
    SAMPLE_META,
    ClassInfo,
    Manifest,
    ShardInfo,
    SplitInfo,
    Stats,
    save_manifest,
)
from data_prep.shards import file_sha256  # noqa: E402
from pipeline.data import ShardDataModule  # noqa: E402
from pipeline.data.device_decode import JpegBatch  # noqa: E402
from pipeline.models.alexnet import AlexNet  # noqa: E402

SIDE, CLASSES, SHARD_SAMPLES, TEXTURES = 256, 1000, 1000, 256


def texture(rng: np.random.Generator, side: int) -> np.ndarray:
    """A colour texture with a roughly natural (1/f) spectrum: JPEG q90 makes ~24 KB of a 256x256 crop."""
    image = np.full((side, side, 3), rng.uniform(60, 190, 3), dtype=np.float32)
    for cells, amplitude in ((4, 45), (16, 25), (64, 14), (side, 6)):
        layer = 0.4 * rng.normal(0, amplitude, (cells, cells, 3)) + 0.9 * rng.normal(
            0, amplitude, (cells, cells, 1)
        )
        channels = [Image.fromarray(layer[..., c].astype(np.float32)) for c in range(3)]
        image += np.stack(
            [np.asarray(c.resize((side, side), Image.Resampling.BICUBIC)) for c in channels], -1
        )
    return np.clip(image, 0, 255).astype(np.uint8)


def _encode_shard(job: tuple[Path, int, int, int]) -> tuple[str, int, bytes]:
    """Samples [first, first + count) as one ustar shard: crops, flips and shifts of shared textures."""
    path, first, count, seed = job
    rng = np.random.default_rng([seed, first])
    bases = [texture(np.random.default_rng([seed, t]), SIDE + 64) for t in rng.choice(TEXTURES, 16)]
    stats = np.zeros(3 + 9)
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for index in range(first, first + count):
            base = bases[rng.integers(len(bases))]
            top, left = rng.integers(0, 65, 2)
            pixels = base[top : top + SIDE, left : left + SIDE]
            pixels = pixels[:, ::-1] if rng.random() < 0.5 else pixels
            pixels = np.clip(pixels.astype(np.int16) + rng.integers(-20, 21), 0, 255).astype(np.uint8)
            out = io.BytesIO()
            Image.fromarray(pixels).save(out, format="JPEG", quality=90)
            sample = pixels[::16, ::16].reshape(-1, 3).astype(np.float64)
            stats += np.concatenate([sample.mean(0), (sample.T @ sample / len(sample)).ravel()])
            members = {
                SAMPLE_LABEL: str(index % CLASSES).encode(),
                SAMPLE_IMAGE: out.getvalue(),
                SAMPLE_META: b'{"wnid": "n%08d", "source_size": [256, 256]}' % (index % CLASSES),
            }
            for extension, data in members.items():
                info = tarfile.TarInfo(f"s{index:08d}.{extension}")
                info.size, info.mtime = len(data), 0
                tar.addfile(info, io.BytesIO(data))
    return path.name, count, stats.tobytes()


def make_shards(root: Path, images: int, seed: int = 0) -> Path:
    """``images`` samples in shards of 1,000 and a manifest (mean and PCA of the pixels); kept for reruns."""
    if (root / "manifest.json").is_file():
        return root
    (root / "train").mkdir(parents=True, exist_ok=True)
    jobs = [
        (root / "train" / f"train-{n:06d}.tar", first, min(SHARD_SAMPLES, images - first), seed)
        for n, first in enumerate(range(0, images, SHARD_SAMPLES))
    ]
    with get_context("fork").Pool(min(len(jobs), os.cpu_count() or 1)) as pool:
        results = pool.map(_encode_shard, jobs)
    moments = sum(np.frombuffer(stats) for _, _, stats in results) / images
    mean, second = moments[:3], moments[3:].reshape(3, 3)
    values, vectors = np.linalg.eigh(second - np.outer(mean, mean))
    order = np.argsort(values)[::-1]
    shards = [
        ShardInfo(
            f"train/{name}", count, (root / "train" / name).stat().st_size, file_sha256(root / "train" / name)
        )
        for name, count, _ in results
    ]
    stats = Stats(images, mean.tolist(), np.sqrt(np.diag(second - np.outer(mean, mean))).tolist(),
                  values[order].tolist(), vectors[:, order].T.tolist())  # fmt: skip
    classes = [ClassInfo(i, f"n{i:08d}", f"class {i}") for i in range(CLASSES)]
    save_manifest(Manifest(root, classes, {"train": SplitInfo(images, shards)}, stats, {"resize": "paper"}))
    return root


@dataclass(frozen=True)
class Row:
    name: str
    precision: str
    images_per_s: float
    wait: float | None  # data-wait fraction; None where there is no loader


def run_steps(
    batches: Iterator[tuple[torch.Tensor, torch.Tensor]],
    step: Callable[[torch.Tensor, torch.Tensor], None] | None,
    warmup: int,
    steps: int,
    device: torch.device,
) -> tuple[float, float]:
    """(images/s, data-wait fraction) over ``steps`` after ``warmup``; wait = host time getting the next batch
    ready on the device (fetch, copy, device decode, normalisation), as DataWaitFraction counts it."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    images = 0
    wait = 0.0
    for index in range(warmup + steps):
        if index == warmup:
            sync()
            start = time.perf_counter()
            wait, images = 0.0, 0
        before = time.perf_counter()
        inputs, labels = next(batches)
        wait += time.perf_counter() - before
        if step is not None:
            step(inputs, labels)
        images += int(labels.shape[0])
    sync()
    elapsed = time.perf_counter() - start
    getattr(batches, "close", lambda: None)()  # a loader's workers stop now, not when garbage-collected
    return images / elapsed, wait / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    parser.add_argument("--quick", action="store_true", help="a smoke run: tiny net, few images and steps")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--images", type=int, help="samples in the generated shards (12,000; quick: 120)")
    parser.add_argument("--warmup", type=int, help="untimed steps per row: workers, cudnn (12; quick: 2)")
    parser.add_argument("--workers", type=int, nargs="+", help="decode=workers rows (4 8 16; quick: 1 2)")
    parser.add_argument("--device-workers", type=int, default=4, help="byte-reading workers of decode=device")
    parser.add_argument("--width", type=float, default=1.0, help="net width (1 = the paper's net)")
    parser.add_argument(
        "--loaders-only", action="store_true", help="only the loader-alone rows (no training)"
    )
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    quick = args.quick  # smaller defaults; --images, --warmup and --workers given explicitly still win
    args.images = args.images or (120 if quick else 12_000)
    args.warmup = args.warmup if args.warmup is not None else (2 if quick else 12)
    args.workers = args.workers or ([1, 2] if quick else [4, 8, 16])
    if quick:
        args.batch, args.width, args.device_workers = 8, 0.125, 1
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device here: run with --device cpu (and --quick) to check the script")
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True
    else:  # one thread: rates per core, and no OpenMP barriers stalling on a loaded machine (10x here)
        torch.set_num_threads(1)
    torch.manual_seed(0)

    started = time.perf_counter()
    root = make_shards(REPO / ".bench" / "gpu" / f"shards-{args.images}", args.images)
    made = time.perf_counter() - started
    steps = args.images // args.batch - args.warmup  # one epoch per row: no epoch boundary inside the timing
    if steps < 1:
        raise SystemExit(f"--images {args.images} gives no timed step at --batch {args.batch}")

    net = AlexNet(CLASSES, width=args.width).to(device, memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    net.train()

    def datamodule(decode: str, workers: int) -> ShardDataModule:
        return ShardDataModule(
            root, batch_size=args.batch, num_workers=workers, decode=decode, shuffle_buffer=1000,
            pin_memory=device.type == "cuda", persistent_workers=False,
        )  # fmt: skip

    reference = datamodule("workers", 0)

    def make_step(precision: str) -> Callable[[torch.Tensor, torch.Tensor], None]:
        autocast = (
            torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16-mixed" else nullcontext()
        )

        def step(images: torch.Tensor, labels: torch.Tensor) -> None:
            inputs = reference.normalize(images, train=True).contiguous(memory_format=torch.channels_last)
            with autocast:
                loss = F.cross_entropy(net(inputs), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        return step

    def loader_batches(dm: ShardDataModule) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for batch in dm.train_dataloader():
            if isinstance(batch, JpegBatch):
                yield dm.device_decode(dm.transfer_batch_to_device(batch, device, 0))
            else:
                yield batch[0].to(device, non_blocking=True), batch[1].to(device, non_blocking=True)

    def synthetic() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        images = torch.randint(0, 256, (args.batch, 3, 227, 227), dtype=torch.uint8, device=device)
        images = images.contiguous(memory_format=torch.channels_last)
        labels = torch.randint(0, CLASSES, (args.batch,), device=device)
        while True:
            yield images, labels

    decoder = "nvJPEG" if device.type == "cuda" else "libjpeg-turbo, main process"
    loaders = {f"decode=workers, {n} workers": ("workers", n) for n in args.workers}
    loaders[f"decode=device ({decoder}), {args.device_workers} workers"] = ("device", args.device_workers)
    rows: list[Row] = []
    for precision in () if args.loaders_only else ("fp32", "bf16-mixed"):
        step = make_step(precision)
        rate, wait = run_steps(synthetic(), step, args.warmup, steps, device)
        rows.append(Row("compute only (synthetic batch on the device)", precision, rate, None))
        print(f"  {precision:10s} compute only: {rate:,.0f} images/s", file=sys.stderr, flush=True)
        for name, (decode, workers) in loaders.items():
            rate, wait = run_steps(
                loader_batches(datamodule(decode, workers)), step, args.warmup, steps, device
            )
            rows.append(Row(name, precision, rate, wait))
            print(f"  {precision:10s} {name}: {rate:,.0f} images/s", file=sys.stderr, flush=True)
    for name, (decode, workers) in loaders.items():
        rate, _ = run_steps(loader_batches(datamodule(decode, workers)), None, args.warmup, steps, device)
        rows.append(Row(f"{name}, loader alone", "-", rate, None))
        print(f"  loader alone: {name}: {rate:,.0f} images/s", file=sys.stderr, flush=True)

    jpeg_kb = sum(s.bytes for s in reference.manifest.split("train").shards) / args.images / 1024
    title = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(
        f"\n{title} | torch {torch.__version__} | {os.cpu_count()} CPU cores | net width {args.width} | "
        f"batch {args.batch} | {steps} timed steps per row | {args.images} JPEGs 256x256, ~{jpeg_kb:.0f} KB "
        f"(made in {made:.0f} s)"
    )
    width = max(len(row.name) for row in rows)
    print(f"| {'path':{width}s} | precision  | images/s | data wait | vs compute only |")
    print(f"|{'-' * (width + 2)}|------------|----------|-----------|-----------------|")
    ceiling = {row.precision: row.images_per_s for row in rows if row.name.startswith("compute only")}
    for row in rows:
        wait = "" if row.wait is None else f"{row.wait:.0%}"
        ratio = f"{row.images_per_s / ceiling[row.precision]:.2f}x" if row.precision in ceiling else ""
        rate = f"{row.images_per_s:8,.0f}"
        print(f"| {row.name:{width}s} | {row.precision:10s} | {rate} | {wait:>9s} | {ratio:>15s} |")
    print(f"total {time.perf_counter() - started:.0f} s")
    if args.json:
        args.json.write_text(json.dumps([asdict(row) for row in rows], indent=1))


if __name__ == "__main__":
    main()
