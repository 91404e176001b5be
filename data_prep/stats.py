"""RGB mean/std and the 3x3 RGB covariance PCA (the paper's colour augmentation) over train images.

Each shard accumulates exact integer sums (pixel count, per-channel sums, the 3x3 sums of products) over its
samples that fall in the statistics sample (the first ``stats_samples`` of the shuffled train order, so a
fixed size random sample). Integer sums do not depend on the order they are added in, so the statistics are
identical whatever the number of workers and however the run was resumed. (Shards hand in every 4th pixel
in each direction of the resized image, see shards.STATS_STRIDE.)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from data_prep.manifest import Stats


@dataclass
class PixelSums:
    images: int = 0
    pixels: int = 0
    sums: list[int] = field(default_factory=lambda: [0, 0, 0])
    products: list[list[int]] = field(default_factory=lambda: [[0] * 3 for _ in range(3)])

    def add_image(self, rgb: np.ndarray) -> None:
        """Adds one HxWx3 uint8 image. float64 products of values <= 255^2 summed over < 2^37 pixels are exact
        integers, so BLAS's summation order cannot change the result."""
        flat = np.ones((rgb.shape[0] * rgb.shape[1], 4), dtype=np.float64)
        flat[:, :3] = rgb.reshape(-1, 3)
        gram = flat.T @ flat  # one BLAS call: [:3, :3] the products, [3, :3] the channel sums
        products, sums = gram[:3, :3], gram[3, :3]
        self.images += 1
        self.pixels += flat.shape[0]
        self.sums = [a + int(b) for a, b in zip(self.sums, sums, strict=True)]
        self.products = [
            [a + int(b) for a, b in zip(row, new_row, strict=True)]
            for row, new_row in zip(self.products, products, strict=True)
        ]

    def merge(self, other: PixelSums) -> None:
        self.images += other.images
        self.pixels += other.pixels
        self.sums = [a + b for a, b in zip(self.sums, other.sums, strict=True)]
        self.products = [
            [a + b for a, b in zip(r1, r2, strict=True)]
            for r1, r2 in zip(self.products, other.products, strict=True)
        ]

    def to_dict(self) -> dict:
        return {"images": self.images, "pixels": self.pixels, "sums": self.sums, "products": self.products}

    @classmethod
    def from_dict(cls, data: dict) -> PixelSums:
        return cls(
            int(data["images"]), int(data["pixels"]), list(data["sums"]), [list(r) for r in data["products"]]
        )


def pca(covariance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (descending) and eigenvectors (one per row), each signed so its largest component is
    positive: eigh's sign is arbitrary, and the manifest must not depend on it."""
    values, vectors = np.linalg.eigh(covariance)
    order = np.argsort(values)[::-1]
    values, rows = values[order], vectors[:, order].T.copy()
    for row in rows:
        if row[np.argmax(np.abs(row))] < 0:
            row *= -1
    return values, rows


def finalize(total: PixelSums) -> Stats | None:
    if total.pixels == 0:
        return None
    n = total.pixels
    # Exact rational arithmetic in Python ints until the single division: no cancellation in E[x^2] - E[x]^2.
    sums = total.sums
    cov = np.array(
        [[(n * total.products[i][j] - sums[i] * sums[j]) / (n * n) for j in range(3)] for i in range(3)],
        dtype=np.float64,
    )
    mean = np.array([s / n for s in sums])
    values, vectors = pca(cov)
    return Stats(
        samples=total.images,
        mean=[round(float(x), 6) for x in mean],
        std=[round(float(np.sqrt(cov[i, i])), 6) for i in range(3)],
        eigenvalues=[round(float(x), 6) for x in values],
        eigenvectors=[[round(float(x), 8) for x in row] for row in vectors],
    )
