"""The resume sidecars live in ``.prep-state/``, so the shard folders are plain WebDataset folders that the
ecosystem's readers take as they are: HF ``datasets`` through ``data_dir=``, and ``webdataset.WebDataset``.
Outputs of earlier versions (sidecars beside the shards) still load, and a rerun resumes and tidies them."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import webdataset as wds

from data_prep.manifest import load_manifest
from data_prep.prep import run_prep
from data_prep.prep_state import PREP_STATE_DIR, SIDECAR_SUFFIX

SHARD_SAMPLES = 5


@pytest.fixture(scope="module")
def prep_output(fake_imagenet: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("prep") / "shards"
    run_prep(fake_imagenet, out, workers=1, shard_samples=SHARD_SAMPLES, progress=False)
    return out


def test_shard_folders_hold_only_shards_and_the_sidecars_are_in_prep_state(prep_output):
    manifest = load_manifest(prep_output)
    for split in ("train", "val"):
        names = {shard.name.split("/")[1] for shard in manifest.split(split).shards}
        assert {path.name for path in (prep_output / split).iterdir()} == names
        sidecars = {path.name for path in (prep_output / PREP_STATE_DIR / split).iterdir()}
        assert sidecars == {name + SIDECAR_SUFFIX for name in names}


def test_hf_datasets_reads_the_prep_output_through_data_dir(prep_output, tmp_path):
    datasets = pytest.importorskip("datasets")
    manifest = load_manifest(prep_output)
    # the whole output: datasets names the splits from the folders (val/ is its "validation"), skips
    # .prep-state/ (hidden) and manifest.json (not a tar)
    loaded = datasets.load_dataset("webdataset", data_dir=str(prep_output), cache_dir=str(tmp_path / "hf"))
    assert {name: len(split) for name, split in loaded.items()} == {
        "train": manifest.split("train").samples,
        "validation": manifest.split("val").samples,
    }
    assert {"__key__", "jpg", "cls", "json"} <= set(loaded["train"].column_names)
    assert loaded["train"][0]["jpg"].size == (256, 256)  # decoded by datasets as a PIL image
    train_only = datasets.load_dataset(  # one shard folder
        "webdataset", data_dir=str(prep_output / "train"), split="train", cache_dir=str(tmp_path / "hf2")
    )
    assert sorted(train_only["__key__"]) == sorted(loaded["train"]["__key__"])


def test_webdataset_reads_the_shard_folder(prep_output):
    manifest = load_manifest(prep_output)
    urls = sorted(str(path) for path in (prep_output / "train").iterdir())
    samples = list(wds.WebDataset(urls, shardshuffle=False).decode("pil").to_tuple("jpg", "cls"))
    assert len(samples) == manifest.split("train").samples
    assert all(image.size == (256, 256) and 0 <= label < manifest.num_classes for image, label in samples)


def test_an_old_output_with_sidecars_beside_the_shards_loads_and_resumes(
    fake_imagenet, prep_output, tmp_path
):
    old = tmp_path / "old"
    shutil.copytree(prep_output, old)
    for sidecar in (old / PREP_STATE_DIR).glob(f"*/*{SIDECAR_SUFFIX}"):  # the layout of earlier versions
        sidecar.rename(old / sidecar.parent.name / sidecar.name)
    shutil.rmtree(old / PREP_STATE_DIR)
    assert load_manifest(old).splits == load_manifest(prep_output).splits
    before = {path.name: path.stat().st_mtime_ns for path in (old / "train").glob("*.tar")}
    run_prep(fake_imagenet, old, workers=1, shard_samples=SHARD_SAMPLES, progress=False)
    after = {path.name: path.stat().st_mtime_ns for path in (old / "train").glob("*.tar")}
    assert after == before  # every shard kept: resumed from the old sidecars
    assert not list(old.glob(f"*/*{SIDECAR_SUFFIX}"))  # which moved into .prep-state/
    assert len(list((old / PREP_STATE_DIR).glob(f"*/*{SIDECAR_SUFFIX}"))) == len(list(old.glob("*/*.tar")))
