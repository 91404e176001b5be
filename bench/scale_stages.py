"""One stage of bench/scale.py in a fresh process, so that each stage's peak RSS is its own.

    python bench/scale_stages.py STAGE '{"out": ..., ...}'    # prints one JSON line

Memory, in MiB: ``rss_mib`` is this process's peak (getrusage), ``start_rss_mib`` the same just before the
stage (after its imports: torch alone is ~500 MiB here), so the stage's own growth is the difference;
``workers_rss_mib`` is the peak of the summed RSS of this process's children (prep's workers), sampled every
50 ms with psutil; it counts the pages they share with this process once per worker. ``workers_uss_mib`` is
the peak of their summed private memory (USS, read from smaps once a second): what each added worker costs.
(RUSAGE_CHILDREN is no use here: importing torch in this venv reaps a ~430 MiB child.)
"""

from __future__ import annotations

import contextlib
import json
import resource
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere, without installing
sys.path.insert(0, str(Path(__file__).resolve().parent))


def prep(source: str, out: str, workers: int) -> dict:
    from data_prep.manifest import MANIFEST_NAME
    from data_prep.prep import run_prep

    start = time.perf_counter()
    manifest = run_prep(source, out, workers=workers, progress=False)
    seconds = time.perf_counter() - start
    images = sum(split.samples for split in manifest.splits.values())
    return {
        "seconds": seconds, "images": images, "images_per_s": images / seconds, "workers": workers,
        "manifest_bytes": (Path(out) / MANIFEST_NAME).stat().st_size, "rejected": len(manifest.rejected),
        "shards": sum(len(split.shards) for split in manifest.splits.values()),
    }  # fmt: skip


def verify(out: str) -> dict:
    from data_prep.manifest import load_manifest
    from data_prep.verify import verify_shards

    start = time.perf_counter()
    problems = verify_shards(load_manifest(out))
    return {"seconds": time.perf_counter() - start, "problems": len(problems)}


def _stage(name: str) -> Callable[..., dict]:
    """The stage's function with its imports done, so that start_rss_mib holds them and the stage's growth is
    its own. Only its own imports: MLflow's, say, would add seconds and a hundred MiB to a loader stage."""
    if name == "prep":
        import data_prep.prep  # noqa: F401
        from data_prep.images import resize_backend

        resize_backend()  # torch: prep imports it before forking its workers
        return prep
    if name == "verify":
        import data_prep.verify  # noqa: F401

        return verify
    if name == "tracking":
        from scale_tracking import tracking_stage

        return tracking_stage
    if name in ("loader", "spans", "resume"):
        from scale_data import loader_epoch, resume_position, span_tables

        return {"loader": loader_epoch, "spans": span_tables, "resume": resume_position}[name]
    raise ValueError(f"unknown stage {name!r}: prep, verify, loader, spans, resume or tracking")


def self_peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


class ChildrenPeak(threading.Thread):
    """The peaks of the summed RSS and USS of this process's descendants, sampled until ``stop``."""

    USS_EVERY = 20  # samples: smaps is slow to read, RSS is not

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak, self.peak_uss, self.done = 0, 0, threading.Event()

    def run(self) -> None:
        me = psutil.Process()
        sample = 0
        while not self.done.wait(0.05):
            rss = uss = 0
            for child in me.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    if sample % self.USS_EVERY:
                        rss += child.memory_info().rss
                    else:
                        full = child.memory_full_info()
                        rss, uss = rss + full.rss, uss + full.uss
            self.peak, self.peak_uss = max(self.peak, rss), max(self.peak_uss, uss)
            sample += 1

    def stop(self) -> tuple[float, float]:
        """The peaks of the children's summed RSS and USS, in MiB."""
        self.done.set()
        self.join()
        return self.peak / 2**20, self.peak_uss / 2**20


def main() -> None:
    stage, arguments = sys.argv[1], json.loads(sys.argv[2])
    run = _stage(stage)
    start_rss, sampler = self_peak_mib(), ChildrenPeak()
    sampler.start()
    result = run(**arguments)
    workers_rss, workers_uss = sampler.stop()
    memory = {
        "rss_mib": self_peak_mib(), "start_rss_mib": start_rss,
        "workers_rss_mib": workers_rss, "workers_uss_mib": workers_uss,
    }  # fmt: skip
    print(json.dumps({**result, **memory}))


if __name__ == "__main__":
    main()
