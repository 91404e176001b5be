"""run_prep end to end on generated ImageNet trees (real JPEGs, real tars, read back with webdataset)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import webdataset as wds

from data_prep.fake import make_fake_imagenet
from data_prep.manifest import load_manifest
from data_prep.prep import run_prep

SMALL = {"classes": 3, "train_per_class": 5, "val_per_class": 2, "image_size": (160, 120)}


@pytest.fixture(scope="module")
def both_layouts(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("layouts")
    folders = make_fake_imagenet(root / "folders", layout="folders", **SMALL)
    archives = make_fake_imagenet(root / "archives", layout="archives", **SMALL)
    return folders, archives


def test_both_layouts_give_the_same_shards(
    both_layouts: tuple[Path, Path], tmp_path: Path, shard_files
) -> None:
    folders, archives = both_layouts
    a = run_prep(folders, tmp_path / "a", workers=1, shard_samples=4, progress=False)
    b = run_prep(archives, tmp_path / "b", workers=1, shard_samples=4, progress=False)
    files_a, files_b = shard_files(tmp_path / "a"), shard_files(tmp_path / "b")
    assert len(files_a) == 4 + 2 + 1  # 15 train in 4 shards, 6 val in 2, the manifest
    assert files_a == files_b
    assert a.splits == b.splits


def test_val_labels_from_devkit_or_loc_csv_agree(
    both_layouts: tuple[Path, Path], tmp_path: Path, shard_files
) -> None:
    _, archives = both_layouts
    devkit = archives / "ILSVRC2012_devkit_t12" / "data" / "ILSVRC2012_validation_ground_truth.txt"
    loc = archives / "LOC_val_solution.csv"
    a = run_prep(archives, tmp_path / "a", workers=1, splits=["val"], val_labels=devkit, progress=False)
    run_prep(archives, tmp_path / "b", workers=1, splits=["val"], val_labels=loc, progress=False)
    assert a.splits["val"].samples == 6
    assert shard_files(tmp_path / "a") == shard_files(tmp_path / "b")


def test_round_trip_through_webdataset(fake_imagenet: Path, tmp_path: Path) -> None:
    manifest = run_prep(fake_imagenet, tmp_path, workers=1, shard_samples=5, progress=False)
    loaded = load_manifest(tmp_path)
    assert loaded.to_dict() == manifest.to_dict()
    wnids = [c.wnid for c in loaded.classes]
    for split, per_class in (("train", 6), ("val", 3)):
        samples = list(wds.WebDataset(loaded.shard_paths(split), shardshuffle=False, empty_check=False))
        assert len(samples) == loaded.splits[split].samples == 4 * per_class
        keys = {s["__key__"] for s in samples}
        expected = {p.stem for p in (fake_imagenet / split).rglob("*.JPEG")}
        assert keys == expected
        for sample in samples:
            meta = json.loads(sample["json"])
            source = next((fake_imagenet / split).rglob(sample["__key__"] + ".JPEG"))
            assert meta["wnid"] == source.parent.name  # the class folder it came from
            assert int(sample["cls"]) == wnids.index(meta["wnid"])
            assert "source" not in meta and set(meta) == {"wnid", "source_size"}
            assert meta["source_size"] in ([160, 120], [120, 160])
            assert sample["jpg"][:2] == b"\xff\xd8"
    assert [c.name for c in loaded.classes][:2] == ["tench", "goldfish"]


def test_global_shuffle_is_deterministic_and_mixes_classes(tmp_path: Path) -> None:
    source = make_fake_imagenet(
        tmp_path / "src", classes=4, train_per_class=8, val_per_class=1, image_size=(64, 48)
    )

    def train_order(seed: int, out: str) -> list[list[int]]:
        manifest = run_prep(source, tmp_path / out, workers=1, shard_samples=8, seed=seed, progress=False)
        return [
            [int(s["cls"]) for s in wds.WebDataset(path, shardshuffle=False, empty_check=False)]
            for path in manifest.shard_paths("train")
        ]

    first, again, other = train_order(0, "a"), train_order(0, "b"), train_order(1, "c")
    assert first == again
    assert first != other
    for shard in first:
        assert len(set(shard)) >= 3  # 4 shards of 8: a class-sorted cut would give one class per shard
    val = run_prep(source, tmp_path / "v", workers=1, splits=["val"], progress=False)
    keys = [
        s["__key__"] for s in wds.WebDataset(val.shard_paths("val"), shardshuffle=False, empty_check=False)
    ]
    assert keys == sorted(keys)  # val in order


def test_every_bad_case_is_rejected_and_the_run_completes(tmp_path: Path) -> None:
    source = make_fake_imagenet(
        tmp_path / "src", classes=2, train_per_class=3, val_per_class=1, image_size=(160, 120), bad_cases=True
    )
    manifest = run_prep(source, tmp_path / "out", workers=1, progress=False)
    reasons = {Path(r["source"]).stem.split("_", 1)[1]: r["reason"] for r in manifest.rejected}
    assert set(reasons) == {"truncated", "empty", "notimage", "bomb", "unreadable"}
    assert "truncated" in reasons["truncated"] and "empty" in reasons["empty"]
    assert "bomb" in reasons["bomb"] and "not an image" in reasons["notimage"]
    assert "unreadable" in reasons["unreadable"]
    # 6 good + cmyk, grey, png-named-JPEG, exif all fixed and kept
    assert manifest.splits["train"].samples == 6 + 4
    keys = {s["__key__"] for s in wds.WebDataset(manifest.shard_paths("train"), shardshuffle=False)}
    assert {"n01440764_cmyk", "n01440764_grey", "n01440764_png", "n01440764_exif"} <= keys


def test_strict_fails_on_any_reject(tmp_path: Path) -> None:
    source = make_fake_imagenet(
        tmp_path / "src", classes=1, train_per_class=2, val_per_class=1, image_size=(64, 48), bad_cases=True
    )
    with pytest.raises(ValueError, match="strict=true and 5 inputs were rejected"):
        run_prep(source, tmp_path / "out", workers=1, splits=["train"], strict=True, progress=False)
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_statistics_in_manifest(fake_imagenet: Path, tmp_path: Path) -> None:
    stats = run_prep(fake_imagenet, tmp_path, workers=1, stats_samples=10, progress=False).stats
    assert stats is not None and stats.samples == 10
    assert all(0 < m < 255 for m in stats.mean) and all(s > 10 for s in stats.std)
    assert stats.eigenvalues == sorted(stats.eigenvalues, reverse=True)


def test_settings_change_redoes_shards_and_removes_extra_ones(fake_imagenet: Path, tmp_path: Path) -> None:
    run_prep(fake_imagenet, tmp_path, workers=1, shard_samples=4, progress=False)
    assert len(list((tmp_path / "train").glob("*.tar"))) == 6
    manifest = run_prep(
        fake_imagenet, tmp_path, workers=1, shard_samples=12, resize="short256", progress=False
    )
    assert len(list((tmp_path / "train").glob("*.tar"))) == 2
    sample = next(iter(wds.WebDataset(manifest.shard_paths("train"), shardshuffle=False)))
    assert sample["jpg"] != b""
    assert manifest.settings["resize"] == "short256"
