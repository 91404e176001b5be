"""The shard manifest: the contract between data_prep (which writes it) and pipeline.data (which reads it).

Layout of ``manifest.json`` (beside ``train/`` and ``val/``)::

    {
      "format": "alexnet-pipeline-shards", "version": 1,
      "settings": {...},                       # the prep settings that made these shards
      "classes": [{"index": 0, "wnid": "n01440764", "name": "tench"}, ...],
      "splits": {"train": {"samples": N, "shards": [{"name": "train/train-000000.tar",
                                                    "samples": n, "bytes": b, "sha256": "..."}]},
                 "val": {...}},
      "rejected": [{"split": "train", "source": "train/n01440764/x.JPEG", "reason": "truncated JPEG"}],
      "stats": {"samples": n, "mean": [r, g, b], "std": [r, g, b],
                "pca": {"eigenvalues": [l1, l2, l3], "eigenvectors": [[p1r, p1g, p1b], [p2...], [p3...]]}}
    }

Statistics are in RGB, 0-255 pixel units, over the resized train images. ``eigenvectors`` holds one
eigenvector per row, ordered by descending eigenvalue. Shard names are relative to the manifest's directory.
The file holds no timestamp, so identical inputs give a byte-identical manifest.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alexnet_common.atomic_files import write_json_atomic
from data_prep.manifest_checks import explain_root, validate_manifest

MANIFEST_NAME = "manifest.json"
FORMAT = "alexnet-pipeline-shards"
VERSION = 1

# The shard sample format: every sample is three tar members named ``<key>.<member>``, where ``key`` is the
# source file's stem (WebDataset's ``__key__``). data_prep writes them, verify checks them, the loader reads
# them.
SAMPLE_IMAGE = "jpg"  # the JPEG bytes (RGB, baseline), resized as the manifest's settings say
SAMPLE_LABEL = "cls"  # the class index as ASCII digits, an index into the manifest's ``classes``
SAMPLE_META = "json"  # {"wnid": ..., "source_size": [width, height]} of the source image
SAMPLE_MEMBERS = (SAMPLE_LABEL, SAMPLE_IMAGE, SAMPLE_META)  # the order each sample's members are written in


@dataclass(frozen=True)
class ShardInfo:
    name: str
    samples: int
    bytes: int
    sha256: str


@dataclass(frozen=True)
class SplitInfo:
    samples: int
    shards: list[ShardInfo]


@dataclass(frozen=True)
class ClassInfo:
    index: int
    wnid: str
    name: str


@dataclass(frozen=True)
class Stats:
    samples: int
    mean: list[float]
    std: list[float]
    eigenvalues: list[float]
    eigenvectors: list[list[float]]


@dataclass
class Manifest:
    root: Path
    classes: list[ClassInfo]
    splits: dict[str, SplitInfo]
    stats: Stats | None
    settings: dict[str, Any] = field(default_factory=dict)
    rejected: list[dict[str, str]] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def split(self, name: str) -> SplitInfo:
        if name not in self.splits:
            raise ValueError(
                f"{self.root / MANIFEST_NAME} has no '{name}' split "
                f"(it has: {', '.join(sorted(self.splits))}); "
                f"rerun data_prep with splits=[{name}] or point data.root at a prep output that has it"
            )
        return self.splits[name]

    def shard_paths(self, split: str) -> list[str]:
        return [str(self.root / s.name) for s in self.split(split).shards]

    def to_dict(self) -> dict[str, Any]:
        stats = None
        if self.stats is not None:
            stats = {
                "samples": self.stats.samples,
                "mean": self.stats.mean,
                "std": self.stats.std,
                "pca": {"eigenvalues": self.stats.eigenvalues, "eigenvectors": self.stats.eigenvectors},
            }
        return {
            "format": FORMAT,
            "version": VERSION,
            "settings": self.settings,
            "classes": [vars(c) for c in self.classes],
            "splits": {
                name: {"samples": s.samples, "shards": [vars(sh) for sh in s.shards]}
                for name, s in self.splits.items()
            },
            "rejected": self.rejected,
            "stats": stats,
        }


def manifest_from_dict(data: Any, root: Path) -> Manifest:
    """Builds a Manifest from parsed JSON, validated first (``manifest_checks``): a ``ManifestError`` (a
    ValueError) naming the manifest, the field and the fix for any missing, mistyped or inconsistent field."""
    validate_manifest(data, root / MANIFEST_NAME, format_name=FORMAT, version=VERSION)
    stats_raw = data.get("stats")
    stats = None
    if stats_raw:
        stats = Stats(
            samples=stats_raw["samples"],
            mean=[float(x) for x in stats_raw["mean"]],
            std=[float(x) for x in stats_raw["std"]],
            eigenvalues=[float(x) for x in stats_raw["pca"]["eigenvalues"]],
            eigenvectors=[[float(x) for x in row] for row in stats_raw["pca"]["eigenvectors"]],
        )
    return Manifest(
        root=root,
        classes=[ClassInfo(c["index"], c["wnid"], c["name"]) for c in data["classes"]],
        splits={
            name: SplitInfo(s["samples"], [ShardInfo(**sh) for sh in s["shards"]])
            for name, s in data["splits"].items()
        },
        stats=stats,
        settings=dict(data.get("settings", {})),
        rejected=list(data.get("rejected", [])),
    )


def load_manifest(root: str | os.PathLike[str]) -> Manifest:
    """Reads ``root/manifest.json``; one-line errors that name the path and the fix: FileNotFoundError when
    ``root`` is not a prep output (saying what it is instead), ValueError for a damaged manifest."""
    root = Path(root).expanduser().resolve()
    path = root / MANIFEST_NAME
    if not path.is_file():
        raise FileNotFoundError(explain_root(root, MANIFEST_NAME))
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); rerun data_prep to rewrite it") from exc
    return manifest_from_dict(data, root)


def save_manifest(manifest: Manifest) -> Path:
    path = manifest.root / MANIFEST_NAME
    write_json_atomic(path, manifest.to_dict())
    return path
