"""Writing one shard: deterministic bytes, atomic appearance, and a sidecar that lets a rerun keep it.

A shard's bytes depend only on its planned samples and the settings: tar headers carry a fixed mtime, owner
and mode (as WebDataset's TarWriter with ``mtime=0``), samples go in plan order, and members in sorted key
order. The tar is written under a temporary name, fsynced and renamed; then a sidecar
(``prep_state.py``: ``.prep-state/<split>/<shard>.done.json``, outside the shard folders) records the plan's
fingerprint, the shard's sha256, its rejects and its statistics sums. A rerun keeps a shard only when the
sidecar's fingerprint matches the new plan and the tar's sha256 matches the sidecar, so a kill at any point
leaves nothing that a rerun could mistake for finished work.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from alexnet_common.atomic_files import atomic_file, write_json_atomic
from data_prep.images import Encoded, encode_image
from data_prep.manifest import SAMPLE_IMAGE, SAMPLE_LABEL, SAMPLE_META, ShardInfo
from data_prep.prep_state import legacy_sidecar_path, sidecar_path
from data_prep.sources import SampleRef, read_sample
from data_prep.stats import PixelSums

# Bump when the bytes a shard holds would change for the same plan (codec settings, member layout).
SHARD_FORMAT_REVISION = 2
# Statistics read every 4th pixel in each direction (4,096 of a 256x256 image): 10,000 images give 41M pixels,
# far more than a 3x3 covariance needs, at a sixteenth of the cost.
STATS_STRIDE = 4


@dataclass(frozen=True)
class ShardTask:
    split: str
    index: int
    out: Path
    refs: list[SampleRef]
    labels: list[int]
    resize: str
    quality: int
    max_pixels: int
    stats_count: int  # how many of this shard's first samples belong to the statistics sample

    @property
    def name(self) -> str:
        return f"{self.split}/{self.split}-{self.index:06d}.tar"

    def fingerprint(self) -> str:
        plan = {
            "revision": SHARD_FORMAT_REVISION,
            "settings": [self.resize, self.quality, self.max_pixels, self.stats_count],
            "samples": [
                [r.key, r.wnid, r.source, r.size, c] for r, c in zip(self.refs, self.labels, strict=True)
            ],
        }
        return hashlib.sha256(json.dumps(plan, separators=(",", ":")).encode()).hexdigest()


@dataclass
class ShardResult:
    info: ShardInfo
    rejected: list[dict[str, str]] = field(default_factory=list)
    sums: PixelSums = field(default_factory=PixelSums)
    reused: bool = False


def file_sha256(path: Path) -> str:
    with open(path, "rb") as stream:
        return hashlib.file_digest(stream, "sha256").hexdigest()


def sample_json(wnid: str, encoded: Encoded) -> bytes:
    return json.dumps({"wnid": wnid, "source_size": list(encoded.source_size)}, sort_keys=True).encode()


def _encode_ref(task: ShardTask, ref: SampleRef, want_pixels: bool) -> Encoded | str:
    try:
        data = read_sample(ref)
    except OSError as exc:
        return f"unreadable ({exc.strerror or exc})"
    result = encode_image(
        data, resize=task.resize, quality=task.quality, max_pixels=task.max_pixels, want_pixels=want_pixels
    )
    return result.reason if not isinstance(result, Encoded) else result


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    """One tar member with fixed metadata (what WebDataset's TarWriter writes with ``mtime=0``): no time,
    owner or umask leaks into the bytes. tarfile, not wds.TarWriter: importing webdataset imports torch at
    once, and prep keeps torch out of everything but the resize (a bad path fails in a blink)."""
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o444
    info.uname = info.gname = "bigdata"
    tar.addfile(info, io.BytesIO(data))


def _write_tar(task: ShardTask, stream: io.BufferedWriter, on_sample) -> tuple[int, list[dict], PixelSums]:
    rejected: list[dict[str, str]] = []
    sums = PixelSums()
    written = 0
    with tarfile.open(fileobj=stream, mode="w|", format=tarfile.USTAR_FORMAT) as tar:
        for position, (ref, label) in enumerate(zip(task.refs, task.labels, strict=True)):
            in_stats = position < task.stats_count
            if label < 0:
                encoded = "no label for this file in the val label file"
            else:
                encoded = _encode_ref(task, ref, want_pixels=in_stats)
            on_sample()
            if isinstance(encoded, str):
                rejected.append({"split": task.split, "source": ref.source, "reason": encoded})
                continue
            if in_stats and encoded.pixels is not None:
                sums.add_image(encoded.pixels[::STATS_STRIDE, ::STATS_STRIDE])
            meta = sample_json(ref.wnid or "", encoded)
            members = {SAMPLE_LABEL: str(label).encode(), SAMPLE_IMAGE: encoded.jpeg, SAMPLE_META: meta}
            for member, data in members.items():
                _add_member(tar, f"{ref.key}.{member}", data)
            written += 1
    return written, rejected, sums


def write_shard(task: ShardTask, on_sample=lambda: None) -> ShardResult:
    """Encodes and writes one planned shard (temp file, fsync, rename), then its sidecar."""
    path = task.out / task.name
    with atomic_file(path, "wb") as stream:
        samples, rejected, sums = _write_tar(task, stream, on_sample)
    info = ShardInfo(name=task.name, samples=samples, bytes=path.stat().st_size, sha256=file_sha256(path))
    sidecar = {
        "fingerprint": task.fingerprint(),
        "shard": vars(info),
        "rejected": rejected,
        "stats": sums.to_dict(),
    }
    side = sidecar_path(task.out, task.name)
    side.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(side, sidecar)
    legacy_sidecar_path(task.out, task.name).unlink(missing_ok=True)  # an earlier version's, now stale
    return ShardResult(info=info, rejected=rejected, sums=sums)


def load_finished(task: ShardTask) -> ShardResult | None:
    """The shard a previous run finished for exactly this plan, verified by sha256; None means: redo it."""
    path = task.out / task.name
    side = sidecar_path(task.out, task.name)
    if not side.is_file():  # an output of an earlier version: the sidecar beside the shard
        side = legacy_sidecar_path(task.out, task.name)
    if not (path.is_file() and side.is_file()):
        return None
    try:
        data = json.loads(side.read_text())
        info = ShardInfo(**data["shard"])
        if data["fingerprint"] != task.fingerprint() or info.bytes != path.stat().st_size:
            return None
        if file_sha256(path) != info.sha256:
            return None
        moved = sidecar_path(task.out, task.name)
        if side != moved:  # an earlier version's output: its sidecar leaves the shard folder
            moved.parent.mkdir(parents=True, exist_ok=True)
            os.replace(side, moved)
        return ShardResult(
            info=info, rejected=list(data["rejected"]), sums=PixelSums.from_dict(data["stats"]), reused=True
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
