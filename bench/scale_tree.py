"""A source tree in ImageNet's layout at any count, fast: tiny real JPEGs, hard links to a small pool.

    train/<wnid>/<wnid>_<n>.JPEG           (classes near-equal in size, real wnids)
    val/ILSVRC2012_val_<8 digits>.JPEG     (flat, as the Kaggle/CLS-LOC copy) + LOC_val_solution.csv
    LOC_synset_mapping.txt

The pixels come from data_prep.photos (as data_prep.fake), encoded once into a pool of distinct JPEGs; every
file is a hard link to one of them, so 1.28M files cost 1.28M directory entries and a few MB of data, and a
million links never reach ext4's 65,000-links-per-inode limit (the pool grows with the count).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from data_prep.fake import fake_wnids, jpeg_bytes
from data_prep.labels import LOC_SOLUTION, SYNSET_MAPPING
from data_prep.photos import photo_like

IMAGENET_TRAIN = 1_281_167
IMAGENET_VAL = 50_000
IMAGENET_CLASSES = 1_000
IMAGE_SIZE = (96, 72)  # tiny: prep still decodes, resizes to 256 and re-encodes each one
LINKS_PER_POOL_FILE = 4_000
DONE = ".scale-tree-done"


def val_count(images: int) -> int:
    """Val images at ImageNet's train:val ratio (50,000 at the full count)."""
    return max(1, round(images * IMAGENET_VAL / IMAGENET_TRAIN))


def _pool(folder: Path, size: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(size):
        path = folder / f"{i:05d}.jpg"
        path.write_bytes(jpeg_bytes(photo_like(rng, *IMAGE_SIZE)))
        paths.append(path)
    return paths


def class_sizes(images: int, classes: int) -> list[int]:
    return [images * (c + 1) // classes - images * c // classes for c in range(classes)]


def make_tree(root: Path, images: int, classes: int) -> dict:
    """Writes the tree under ``root`` (kept and reused when complete) and returns its counts and timing."""
    if classes < 1 or images < classes:
        raise ValueError(f"--images {images} --classes {classes}: need at least one image per class")
    val = val_count(images)
    if (root / DONE).is_file():
        return {"train": images, "val": val, "classes": classes, "seconds": 0.0, "reused": True}
    start = time.perf_counter()
    pool = _pool(root / ".pool", max(16, -(-(images + val) // LINKS_PER_POOL_FILE)))
    wnids = fake_wnids(classes)
    next_file = 0
    for wnid, count in zip(wnids, class_sizes(images, classes), strict=True):
        folder = root / "train" / wnid
        folder.mkdir(parents=True, exist_ok=True)
        for n in range(count):
            os.link(pool[next_file % len(pool)], folder / f"{wnid}_{10000 + n}.JPEG")
            next_file += 1
    (root / "val").mkdir(parents=True, exist_ok=True)
    rows = []
    for number in range(1, val + 1):
        name = f"ILSVRC2012_val_{number:08d}"
        os.link(pool[next_file % len(pool)], root / "val" / f"{name}.JPEG")
        next_file += 1
        rows.append(f"{name},{wnids[number % classes]} 0 0 10 10\n")
    (root / LOC_SOLUTION).write_text("ImageId,PredictionString\n" + "".join(rows))
    (root / SYNSET_MAPPING).write_text("".join(f"{w} class {w}\n" for w in wnids))
    (root / DONE).write_text("")
    seconds = time.perf_counter() - start
    return {"train": images, "val": val, "classes": classes, "seconds": seconds, "reused": False}
