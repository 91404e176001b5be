"""Tiny real shards for the data tests: PIL-encoded JPEGs in WebDataset tars, with a real manifest.

Sample i of a split gets class i, so a batch's labels name exactly which samples it holds.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds
from PIL import Image

from data_prep.manifest import ClassInfo, Manifest, ShardInfo, SplitInfo, Stats, save_manifest

IMAGE_SIZE = 64
CROP = 56


def _image(rng: np.random.Generator) -> np.ndarray:
    """A smooth colour gradient plus noise: compresses like a photo, differs per sample."""
    y, x = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE] / IMAGE_SIZE
    base = rng.uniform(0, 255, 3) * 0.6
    slope = rng.uniform(-80, 80, (2, 3))
    pixels = base + x[..., None] * slope[0] + y[..., None] * slope[1] + rng.normal(0, 12, (64, 64, 3))
    return np.clip(pixels, 0, 255).astype(np.uint8)


def _jpeg(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG", quality=90)
    return out.getvalue()


def _write_split(root: Path, split: str, sizes: Sequence[int], first_label: int, corrupt: set[int], rng):
    (root / split).mkdir(parents=True)
    shards, pixels, label = [], [], first_label
    for index, size in enumerate(sizes):
        name = f"{split}/{split}-{index:06d}.tar"
        with wds.TarWriter(str(root / name), mtime=0) as sink:  # as data_prep writes: no pax headers
            for _ in range(size):
                image = _image(rng)
                pixels.append(image.reshape(-1, 3))
                jpg = b"\xff\xd8 not a jpeg at all" if label in corrupt else _jpeg(image)
                sink.write(
                    {"__key__": f"img{label:05d}", "jpg": jpg, "cls": str(label).encode(), "json": b"{}"}
                )
                label += 1
        data = (root / name).read_bytes()
        shards.append(ShardInfo(name, size, len(data), hashlib.sha256(data).hexdigest()))
    return SplitInfo(sum(sizes), shards), np.concatenate(pixels).astype(np.float64)


def build_shards(
    root: Path, train: Sequence[int], val: Sequence[int], corrupt: Sequence[int] = (), seed: int = 0
) -> Path:
    """Writes train/ and val/ shards of the given sizes and a manifest with the pixels' real mean and PCA."""
    rng = np.random.default_rng(seed)
    train_split, pixels = _write_split(root, "train", train, 0, set(corrupt), rng)
    val_split, _ = _write_split(root, "val", val, sum(train), set(), rng)
    eigenvalues, eigenvectors = np.linalg.eigh(np.cov(pixels, rowvar=False))
    order = np.argsort(eigenvalues)[::-1]
    stats = Stats(
        samples=len(pixels) // (IMAGE_SIZE * IMAGE_SIZE),
        mean=pixels.mean(0).tolist(),
        std=pixels.std(0).tolist(),
        eigenvalues=eigenvalues[order].tolist(),
        eigenvectors=eigenvectors[:, order].T.tolist(),
    )
    classes = [ClassInfo(i, f"n{i:08d}", f"class {i}") for i in range(sum(train) + sum(val))]
    save_manifest(Manifest(root, classes, {"train": train_split, "val": val_split}, stats))
    return root


@pytest.fixture(scope="session")
def shard_factory(tmp_path_factory) -> Callable[..., Path]:
    def make(name: str, train: Sequence[int], val: Sequence[int], corrupt: Sequence[int] = ()) -> Path:
        return build_shards(tmp_path_factory.mktemp(name), train, val, corrupt)

    return make


@pytest.fixture(scope="session")
def uneven_shards(shard_factory) -> Path:
    """58 train samples in 5 uneven shards; 20 val samples in 5 shards."""
    return shard_factory("uneven", train=[13, 7, 22, 5, 11], val=[5, 3, 6, 2, 4])


@pytest.fixture(scope="session")
def few_shards(shard_factory) -> Path:
    """Fewer shards than 2 ranks x 2 workers: 2 train shards (30 samples), 2 val shards (13 samples)."""
    return shard_factory("few", train=[17, 13], val=[9, 4])


@pytest.fixture(scope="session")
def corrupt_shards(shard_factory) -> Path:
    """24 train samples in 3 shards; sample 9's JPEG bytes are garbage."""
    return shard_factory("corrupt", train=[8, 8, 8], val=[4], corrupt=[9])
