"""verify catches damage; the manifest's PCA is numpy's PCA of the same pixels."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import webdataset as wds
from PIL import Image

from data_prep.manifest import load_manifest
from data_prep.prep import run_prep
from data_prep.shards import STATS_STRIDE
from data_prep.stats import PixelSums, finalize
from data_prep.verify import main as verify_main
from data_prep.verify import verify_shards
from tests.helpers.paths import REPO


def test_verify_passes_clean_output_and_names_a_flipped_byte(
    demo_shards: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "shards"
    shutil.copytree(demo_shards, out)
    assert verify_shards(load_manifest(out)) == []
    shard = out / "val" / "val-000000.tar"
    with open(shard, "r+b") as f:
        f.seek(5000)
        byte = f.read(1)
        f.seek(5000)
        f.write(bytes([byte[0] ^ 0x01]))
    problems = verify_shards(load_manifest(out))
    assert len(problems) == 1 and problems[0].startswith("val/val-000000.tar: sha256")
    try:
        verify_main([f"out={out}"])
    except SystemExit as exit_:
        assert exit_.code == 1
    else:
        raise AssertionError("verify should exit non-zero")
    assert "MISMATCH val/val-000000.tar" in capsys.readouterr().err


def test_verify_command_exit_codes(demo_shards: Path, tmp_path: Path) -> None:
    ok = subprocess.run(
        [sys.executable, "-m", "data_prep.verify", f"out={demo_shards}"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert ok.returncode == 0 and ok.stdout.startswith("ok: ")
    missing = subprocess.run(
        [sys.executable, "-m", "data_prep.verify", f"out={tmp_path}"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert (
        missing.returncode == 2 and str(tmp_path) in missing.stderr and len(missing.stderr.splitlines()) == 1
    )


def test_pca_matches_numpy_on_a_known_image_set(demo_shards: Path) -> None:
    manifest = load_manifest(demo_shards)
    stats = manifest.stats
    assert stats is not None and stats.samples == manifest.splits["train"].samples  # demo < stats_samples
    step = STATS_STRIDE  # the pixels prep reads for its statistics
    images = [
        np.asarray(Image.open(io.BytesIO(s["jpg"])).convert("RGB"))
        for s in wds.WebDataset(manifest.shard_paths("train"), shardshuffle=False)
    ]
    pixels = np.concatenate([i[::step, ::step].reshape(-1, 3) for i in images]).astype(np.float64)
    # the shards hold re-encoded JPEGs of the pixels prep measured: JPEG error moves the numbers slightly
    assert np.allclose(pixels.mean(axis=0), stats.mean, atol=0.5)
    covariance = np.cov(pixels, rowvar=False, bias=True)
    assert np.allclose(np.sqrt(np.diag(covariance)), stats.std, rtol=0.02)
    values, vectors = np.linalg.eigh(covariance)
    assert np.allclose(values[::-1], stats.eigenvalues, rtol=0.05)
    for expected, got in zip(vectors[:, ::-1].T, stats.eigenvectors, strict=True):
        assert abs(float(np.dot(expected, got))) > 0.99  # same axis (eigenvectors are defined up to sign)


def test_pixel_sums_are_exact_numpy_statistics() -> None:
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, (40, 30, 3), dtype=np.uint8) for _ in range(5)]
    images[1][..., 1] = images[1][..., 0] // 2 + 60  # correlate channels so the PCA has structure
    halves = PixelSums(), PixelSums()
    for i, image in enumerate(images):
        halves[i % 2].add_image(image)
    halves[0].merge(halves[1])
    stats = finalize(halves[0])
    pixels = np.concatenate([i.reshape(-1, 3) for i in images]).astype(np.float64)
    covariance = np.cov(pixels, rowvar=False, bias=True)
    values, vectors = np.linalg.eigh(covariance)
    assert stats is not None and stats.samples == 5
    assert np.allclose(stats.mean, pixels.mean(axis=0), atol=1e-5)
    assert np.allclose(stats.std, pixels.std(axis=0), atol=1e-5)
    assert np.allclose(stats.eigenvalues, values[::-1], atol=1e-5)
    for expected, got in zip(vectors[:, ::-1].T, stats.eigenvectors, strict=True):
        assert np.allclose(np.abs(expected), np.abs(got), atol=1e-6)
        assert max(got, key=abs) > 0  # sign fixed: largest component positive


def test_demo_manifest(demo_shards: Path) -> None:
    manifest = load_manifest(demo_shards)
    assert manifest.num_classes == 10
    assert [c.name for c in manifest.classes] == [f"digit {d}" for d in range(10)]
    assert manifest.splits["train"].samples + manifest.splits["val"].samples == 1797
    assert len(manifest.splits["train"].shards) == 15 and len(manifest.splits["val"].shards) == 4
    assert {Path(r["source"]).name for r in manifest.rejected} == {
        "n99000003_truncated.JPEG",
        "n99000005_notanimage.JPEG",
    }
    sample = next(iter(wds.WebDataset(manifest.shard_paths("train"), shardshuffle=False)))
    assert Image.open(io.BytesIO(sample["jpg"])).size == (256, 256)


def test_rerun_on_identical_input_is_byte_identical(fake_imagenet: Path, tmp_path: Path, shard_files) -> None:
    run_prep(fake_imagenet, tmp_path / "a", workers=1, progress=False)
    run_prep(fake_imagenet, tmp_path / "b", workers=1, progress=False)
    assert shard_files(tmp_path / "a") == shard_files(tmp_path / "b")
