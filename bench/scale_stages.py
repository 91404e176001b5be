"""One stage of bench/scale.py in a fresh process, so that each stage's peak RSS is its own.

    python bench/scale_stages.py STAGE '{"out": ..., ...}'    # prints one JSON line

Peak RSS comes from getrusage: this process (RUSAGE_SELF) and the largest of its reaped children
(RUSAGE_CHILDREN, i.e. prep's worker processes), in MiB.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

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


def _stages() -> dict:
    from scale_data import loader_epoch, resume_position, span_tables
    from scale_tracking import tracking_stage

    return {
        "prep": prep,
        "verify": verify,
        "loader": loader_epoch,
        "spans": span_tables,
        "resume": resume_position,
        "tracking": tracking_stage,
    }


def peak_rss_mib() -> dict:
    # ru_maxrss is in KiB on Linux
    return {
        "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "children_rss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }


def main() -> None:
    stage, arguments = sys.argv[1], json.loads(sys.argv[2])
    result = _stages()[stage](**arguments)
    print(json.dumps({**result, **peak_rss_mib()}))


if __name__ == "__main__":
    main()
