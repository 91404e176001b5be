"""Per-batch float conversion, PCA lighting and mean subtraction; the manifest errors."""

from __future__ import annotations

import pytest
import torch

from data_prep.manifest import load_manifest
from pipeline.data import ShardDataModule, pca_lighting_shift

CROP = 56  # crops of the fixtures' 64x64 images (conftest.py)


def test_pca_lighting_has_the_covariance_the_eigendecomposition_predicts(uneven_shards):
    # Real eigenvalues/eigenvectors of the fixture's pixels (0-255 units). With n draws the sample
    # covariance's relative error is ~sqrt(2/n) ≈ 0.3% at n = 200,000; 2% of the largest entry leaves a wide
    # margin while a wrong scale (e.g. sqrt(λ) instead of λ, or rows taken as columns) is off by far more.
    stats = load_manifest(uneven_shards).stats
    eigenvalues, eigenvectors = torch.tensor(stats.eigenvalues), torch.tensor(stats.eigenvectors)
    sigma = 0.1
    torch.manual_seed(0)
    shift = pca_lighting_shift(200_000, eigenvalues.double(), eigenvectors.double(), sigma)
    predicted = (
        eigenvectors.double().T @ torch.diag((sigma * eigenvalues.double()) ** 2) @ eigenvectors.double()
    )
    empirical = torch.cov(shift.T)
    assert torch.allclose(empirical, predicted, atol=0.02 * predicted.abs().max().item())
    assert shift.mean(0).abs().max() < 0.02 * predicted.diagonal().max().sqrt()


def test_training_batches_get_lighting_in_the_documented_scale(uneven_shards):
    # The DataModule applies λ in [0, 1]-intensity units (λ/255 in 0-255 units): a few grey levels of noise.
    dm = ShardDataModule(uneven_shards, crop_size=CROP, pca_lighting=0.1)
    images = torch.full((50_000, 3, 1, 1), 100, dtype=torch.uint8)
    torch.manual_seed(1)
    out = dm.normalize(images, train=True)
    shift = (out + dm.mean[None, :, None, None] - 100.0).flatten(1)
    scaled = dm.eigenvalues / 255.0
    predicted = dm.eigenvectors.T @ torch.diag((0.1 * scaled) ** 2) @ dm.eigenvectors
    assert torch.allclose(
        torch.cov(shift.T.double()).float(), predicted, atol=0.03 * predicted.abs().max().item()
    )
    assert out.dtype == torch.float32


@pytest.mark.parametrize("lighting", [0.0, 0.1])
def test_eval_batches_get_exact_mean_subtraction_only(uneven_shards, lighting):
    dm = ShardDataModule(uneven_shards, crop_size=CROP, pca_lighting=lighting)
    images = torch.randint(0, 256, (4, 3, CROP, CROP), dtype=torch.uint8)
    expected = (
        images.double() - torch.tensor(load_manifest(uneven_shards).stats.mean).double()[None, :, None, None]
    )
    out = dm.normalize(images, train=lighting == 0.0)  # lighting off, or eval: no noise either way
    assert out.dtype == torch.float32
    assert torch.equal(out, expected.float())


def test_mean_subtraction_can_be_switched_off(uneven_shards):
    dm = ShardDataModule(uneven_shards, crop_size=CROP, pca_lighting=0.0, mean_subtraction=False)
    images = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    assert torch.equal(dm.normalize(images, train=True), images.float())


def test_stats_are_exposed_as_tensors(uneven_shards):
    dm = ShardDataModule(uneven_shards, crop_size=CROP)
    stats = load_manifest(uneven_shards).stats
    assert dm.mean.tolist() == pytest.approx(stats.mean)
    assert dm.eigenvalues.shape == (3,) and dm.eigenvectors.shape == (3, 3)
    assert torch.allclose(dm.eigenvectors @ dm.eigenvectors.T, torch.eye(3), atol=1e-5)  # orthonormal rows
    assert dm.num_classes == 78


def test_missing_directory_manifest_or_shard_is_a_one_line_error(tmp_path, uneven_shards):
    with pytest.raises(FileNotFoundError, match=r"data.root .*nowhere does not exist"):
        ShardDataModule(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=r"no manifest.json in .*; set data.root"):
        ShardDataModule(tmp_path)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "manifest.json").write_text((uneven_shards / "manifest.json").read_text())
    with pytest.raises(FileNotFoundError, match=r"train-000000.tar listed in .*manifest.json is missing"):
        ShardDataModule(broken)
