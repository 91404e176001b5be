"""Val labels from every file users have, for every val layout."""

from __future__ import annotations

import shutil
import tarfile
from pathlib import Path

import pytest

from data_prep.fake import make_fake_imagenet
from data_prep.labels import class_names, find_val_labels
from data_prep.prep import run_prep

SMALL = {"classes": 3, "train_per_class": 2, "val_per_class": 2, "image_size": (64, 48)}


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_fake_imagenet(tmp_path_factory.mktemp("folders"), **SMALL)


def _truth_from_folders(root: Path) -> dict[str, str]:
    return {p.stem: p.parent.name for p in (root / "val").rglob("*.JPEG")}


def test_devkit_and_loc_csv_give_the_folder_labels(folders: Path, tmp_path: Path) -> None:
    truth = _truth_from_folders(folders)
    assert len(truth) == 6
    assert find_val_labels([folders]) == truth  # the devkit (ground truth + meta.mat) is found first
    only_csv = tmp_path / "csv"
    only_csv.mkdir()
    shutil.copy(folders / "LOC_val_solution.csv", only_csv)
    assert find_val_labels([only_csv]) == truth


def test_devkit_archive_is_read_without_unpacking(folders: Path, tmp_path: Path) -> None:
    with tarfile.open(tmp_path / "ILSVRC2012_devkit_t12.tar.gz", "w:gz") as tar:
        tar.add(folders / "ILSVRC2012_devkit_t12", arcname="ILSVRC2012_devkit_t12")
    assert find_val_labels([tmp_path]) == _truth_from_folders(folders)


def test_flat_val_folder_gives_the_same_val_shards(folders: Path, tmp_path: Path, shard_files) -> None:
    flat = tmp_path / "flat"
    shutil.copytree(folders / "train", flat / "train")
    (flat / "val").mkdir()
    for path in (folders / "val").rglob("*.JPEG"):
        shutil.copy(path, flat / "val" / path.name)
    shutil.copy(folders / "LOC_val_solution.csv", flat)
    run_prep(folders, tmp_path / "a", workers=1, splits=["val"], progress=False)
    run_prep(flat, tmp_path / "b", workers=1, splits=["val"], progress=False)
    assert shard_files(tmp_path / "a") == shard_files(tmp_path / "b")


def test_flat_val_file_without_a_label_is_rejected(folders: Path, tmp_path: Path) -> None:
    flat = tmp_path / "flat"
    shutil.copytree(folders / "train", flat / "train")
    (flat / "val").mkdir()
    for path in (folders / "val").rglob("*.JPEG"):
        shutil.copy(path, flat / "val" / path.name)
    shutil.copy(next((folders / "val").rglob("*.JPEG")), flat / "val" / "ILSVRC2012_val_00009999.JPEG")
    shutil.copy(folders / "LOC_val_solution.csv", flat)
    manifest = run_prep(flat, tmp_path / "out", workers=1, splits=["val"], progress=False)
    assert manifest.splits["val"].samples == 6
    assert manifest.rejected == [
        {
            "split": "val",
            "source": "val/ILSVRC2012_val_00009999.JPEG",
            "reason": "no label for this file in the val label file",
        }
    ]


def test_class_names_from_mapping_file_then_package_then_wnid(tmp_path: Path) -> None:
    (tmp_path / "LOC_synset_mapping.txt").write_text("n99000001 my own name\n")
    names = class_names(["n01440764", "n99000001", "n99999999"], [tmp_path])
    assert names == ["tench", "my own name", "n99999999"]
