"""What a user can get wrong: one line naming the path and the fix, exit code 2, no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from data_prep.fake import make_fake_imagenet
from data_prep.prep import run_prep


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    return make_fake_imagenet(
        tmp_path / "src", classes=2, train_per_class=2, val_per_class=1, image_size=(64, 48)
    )


def _archives(tmp_path: Path, classes: int) -> Path:
    """A fake ImageNet in the official tarballs' layout, one train and one val image per class."""
    return make_fake_imagenet(
        tmp_path / "src",
        classes=classes,
        train_per_class=1,
        val_per_class=1,
        layout="archives",
        image_size=(64, 48),
    )


def test_missing_source(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=f"source {tmp_path / 'nope'} does not exist.*set source="):
        run_prep(tmp_path / "nope", tmp_path / "out", progress=False)


def test_empty_class_folder(tiny: Path, tmp_path: Path) -> None:
    (tiny / "train" / "n09999999").mkdir()
    with pytest.raises(ValueError, match=r"class folder .*n09999999 is empty; copy its images again"):
        run_prep(tiny, tmp_path / "out", progress=False)


def test_val_label_for_unknown_wnid(tiny: Path, tmp_path: Path) -> None:
    stray = tiny / "val" / "n07777777"
    stray.mkdir()
    (stray / "ILSVRC2012_val_00000099.JPEG").write_bytes(b"x")
    with pytest.raises(ValueError, match="labelled n07777777, which is not a class of the train set"):
        run_prep(tiny, tmp_path / "out", progress=False)


def test_unknown_wnid_in_label_file(tmp_path: Path) -> None:
    source = _archives(tmp_path, classes=2)
    csv = source / "LOC_val_solution.csv"
    csv.write_text(csv.read_text().replace("n01443537", "n07777777"))
    with pytest.raises(ValueError, match="n07777777, which is not a class"):
        run_prep(source, tmp_path / "out", val_labels=csv, progress=False)


def test_missing_val_labels_for_the_val_archive(tmp_path: Path) -> None:
    source = _archives(tmp_path, classes=1)
    (source / "LOC_val_solution.csv").unlink()
    (source / "ILSVRC2012_devkit_t12" / "data" / "meta.mat").unlink()
    with pytest.raises(FileNotFoundError, match="no val labels beside .*set val_labels=PATH"):
        run_prep(source, tmp_path / "out", progress=False)


def test_unwritable_out(tiny: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(PermissionError, match=f"out={blocker / 'shards'} is not writable.*set out="):
        run_prep(tiny, blocker / "shards", progress=False)


def test_bad_setting(tiny: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="resize='huge' is not one of paper, short256, none"):
        run_prep(tiny, tmp_path / "out", resize="huge", progress=False)


def test_command_line_error_is_one_line_with_exit_code_2(tmp_path: Path) -> None:
    missing = tmp_path / "no-imagenet-here"
    result = subprocess.run(
        [sys.executable, "-m", "data_prep", f"source={missing}", f"out={tmp_path / 'out'}"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert str(missing) in result.stderr and "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []  # Hydra wrote no outputs/ or log file into the working directory
