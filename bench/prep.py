"""Benchmark: data_prep against a naive PIL loop, 1 -> 2 workers, and peak RSS as the data set grows 10x.

    python bench/prep.py                  # 2,000 generated 500x375 JPEGs, RSS also at 20,000 (hard links)
    python bench/prep.py --images 400     # quick look

Prints, side by side: naive single-process PIL loop (open, convert, resize, crop, save) img/s; prep with
workers=1 img/s and its ratio to the naive loop (target >= 1.5x); prep with workers=2 and the speed-up from 1
to 2 workers (target >= 1.8x); peak RSS of the whole prep process tree at N and 10N images (target: < 10%
growth). Each prep runs in a fresh subprocess (timing run_prep only, not interpreter start-up); RSS is
sampled every 20 ms over the subprocess and all its children with psutil. The generated files are kept in
.bench/ for reruns.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
CLASSES = 20

CHILD = """
import json, resource, sys, time
from data_prep.images import resize_backend
from data_prep.prep import run_prep
resize_backend()  # torch's one-time import is start-up, like the interpreter's: not per-image work
def cpu():  # this process and its reaped workers
    usages = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return sum(u.ru_utime + u.ru_stime for u in usages)
source, out, workers = sys.argv[1], sys.argv[2], int(sys.argv[3])
start, start_cpu = time.perf_counter(), cpu()
manifest = run_prep(source, out, workers=workers, splits=["train"], progress=False)
print(json.dumps({"seconds": time.perf_counter() - start, "cpu": cpu() - start_cpu,
                  "images": manifest.splits["train"].samples}))
"""


def make_source(root: Path, images: int) -> Path:
    from data_prep.fake import make_fake_imagenet

    source = root / f"source-{images}"
    if not (source / "LOC_synset_mapping.txt").is_file():
        shutil.rmtree(source, ignore_errors=True)
        per_class = max(1, images // CLASSES)
        print(f"generating {per_class * CLASSES} ImageNet-like 500x375 JPEGs in {source} ...", flush=True)
        make_fake_imagenet(source, classes=CLASSES, train_per_class=per_class, val_per_class=0)
    return source


def make_linked_copy(source: Path, root: Path, copies: int) -> Path:
    """copies x the source's files as hard links with distinct names: 10x the references, not 10x the work."""
    big = root / f"{source.name}-x{copies}"
    if (big / "LOC_synset_mapping.txt").is_file():
        return big
    shutil.rmtree(big, ignore_errors=True)
    for path in sorted((source / "train").rglob("*.JPEG")):
        target = big / "train" / path.parent.name
        target.mkdir(parents=True, exist_ok=True)
        for k in range(copies):
            os.link(path, target / f"{path.stem}_copy{k}.JPEG")
    shutil.copy(source / "LOC_synset_mapping.txt", big / "LOC_synset_mapping.txt")
    return big


def naive_loop(files: list[Path], out: Path) -> dict:
    """What a first script does: full decode, PIL's default resize filter, crop, save each file."""
    out.mkdir(parents=True, exist_ok=True)
    start, start_cpu = time.perf_counter(), time.process_time()
    for path in files:
        image = Image.open(path).convert("RGB")
        width, height = image.size
        scale = 256 / min(width, height)
        image = image.resize((round(width * scale), round(height * scale)))
        left, top = (image.width - 256) // 2, (image.height - 256) // 2
        image = image.crop((left, top, left + 256, top + 256))
        image.save(out / path.name, format="JPEG", quality=90)
    return {
        "rate": len(files) / (time.perf_counter() - start),
        "cpu_rate": len(files) / (time.process_time() - start_cpu),
    }


def tree_memory(process: psutil.Process) -> tuple[int, int, int]:
    """(RSS, PSS, parent's USS) over the process tree. Forked workers share the parent's pages (torch, numpy),
    which RSS counts once per process; PSS splits shared pages between their users, so its sum is the real
    total. The parent's USS is what it alone holds: the sample references, which grow with the data set."""
    rss = pss = 0
    parent_uss = process.memory_full_info().uss
    for p in [process, *process.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):  # a worker may exit meanwhile
            info = p.memory_full_info()
            rss, pss = rss + info.rss, pss + info.pss
    return rss, pss, parent_uss


def run_prep_subprocess(source: Path, workers: int) -> dict:
    """Runs a fresh prep; returns img/s (run_prep only) and the peak RSS of its process tree."""
    with tempfile.TemporaryDirectory(dir=source.parent) as out:
        command = [sys.executable, "-c", CHILD, str(source), out, str(workers)]
        child = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, text=True)
        watched, peak_rss, peak_pss, peak_uss = psutil.Process(child.pid), 0, 0, 0
        while child.poll() is None:
            try:
                rss, pss, uss = tree_memory(watched)
            except psutil.NoSuchProcess:
                break
            peak_rss, peak_pss, peak_uss = max(peak_rss, rss), max(peak_pss, pss), max(peak_uss, uss)
            time.sleep(0.02)
        output, _ = child.communicate()
        if child.returncode != 0:
            raise SystemExit(f"prep failed (exit {child.returncode}) on {source}")
    result = json.loads(output.strip().splitlines()[-1])
    return {
        "rate": result["images"] / result["seconds"],
        "cpu_rate": result["images"] / result["cpu"],
        "images": result["images"],
        "peak_rss": peak_rss,
        "peak_pss": peak_pss,
        "peak_parent_uss": peak_uss,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=2000, help="generated source images (default 2000)")
    parser.add_argument("--scale", type=int, default=10, help="RSS is also measured at images x scale")
    parser.add_argument(
        "--dir", type=Path, default=REPO / ".bench" / "prep", help="where generated files live"
    )
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    source = make_source(args.dir, args.images)
    files = sorted((source / "train").rglob("*.JPEG"))
    print(f"{len(files)} files, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start")

    with tempfile.TemporaryDirectory(dir=args.dir) as out:
        naive = naive_loop(files, Path(out))
    one = run_prep_subprocess(source, workers=1)
    two = run_prep_subprocess(source, workers=2)
    big = run_prep_subprocess(make_linked_copy(source, args.dir, args.scale), workers=2)

    mib = 2**20
    print(f"\n{'':28}{'img/s wall':>12}{'img/s CPU':>12}{'ratio':>8}  target")
    print(f"{'naive PIL loop, 1 process':28}{naive['rate']:>12.1f}{naive['cpu_rate']:>12.1f}{1.0:>8.2f}")
    print(
        f"{'data_prep workers=1':28}{one['rate']:>12.1f}{one['cpu_rate']:>12.1f}"
        f"{one['rate'] / naive['rate']:>8.2f}  >= 1.5x naive (wall)"
    )
    print(
        f"{'data_prep workers=2':28}{two['rate']:>12.1f}{two['cpu_rate']:>12.1f}"
        f"{two['rate'] / one['rate']:>8.2f}  >= 1.8x workers=1 (wall)"
    )
    print(
        f"CPU-time ratios (robust to other load): workers=1 vs naive "
        f"{one['cpu_rate'] / naive['cpu_rate']:.2f}x; "
        f"per-CPU efficiency workers=2 vs 1 {two['cpu_rate'] / one['cpu_rate']:.2f} (1.0 = linear scaling)"
    )
    for name, what in (
        ("rss", "RSS, prep process tree"),
        ("pss", "PSS, prep process tree"),
        ("parent_uss", "USS, prep parent only"),
    ):
        small, large = two[f"peak_{name}"], big[f"peak_{name}"]
        print(
            f"peak {what}, workers=2: {small / mib:.0f} MiB at "
            f"{two['images']:,} images, {large / mib:.0f} MiB at {big['images']:,}: "
            f"{large / small - 1:+.1%} (target < +10%)"
        )
    print(f"load average {os.getloadavg()[0]:.1f} at the end (other processes share these cores)")


if __name__ == "__main__":
    main()
