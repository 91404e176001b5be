"""The manifest validated on load, and a ``data.root`` that is not a prep output: every error is one line
naming the manifest (or the folder), the field and the fix."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest

from data_prep.manifest import MANIFEST_NAME, load_manifest

SHA = "ab" * 32
GOOD: dict[str, Any] = {
    "format": "alexnet-pipeline-shards",
    "version": 1,
    "settings": {"resize": "paper"},
    "classes": [
        {"index": 0, "wnid": "n00000000", "name": "a"},
        {"index": 1, "wnid": "n00000001", "name": "b"},
    ],
    "splits": {
        "train": {
            "samples": 5,
            "shards": [
                {"name": "train/train-000000.tar", "samples": 3, "bytes": 10, "sha256": SHA},
                {"name": "train/train-000001.tar", "samples": 2, "bytes": 10, "sha256": SHA},
            ],
        },
        "val": {
            "samples": 1,
            "shards": [{"name": "val/val-000000.tar", "samples": 1, "bytes": 10, "sha256": SHA}],
        },
    },
    "rejected": [],
    "stats": {
        "samples": 5,
        "mean": [1, 2, 3],
        "std": [1.0, 1.0, 1.0],
        "pca": {"eigenvalues": [3, 2, 1], "eigenvectors": [[1, 0, 0], [0, 1, 0], [0, 0, 1]]},
    },
}


def _write(root: Path, data: Any) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / MANIFEST_NAME).write_text(json.dumps(data))
    return root


def _set(data: dict, dotted: str, value: Any) -> dict:
    data = copy.deepcopy(data)
    *path, last = dotted.split(".")
    node = data
    for part in path:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if value is KeyError:
        del node[int(last) if isinstance(node, list) else last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return data


def test_a_sound_manifest_loads(tmp_path):
    manifest = load_manifest(_write(tmp_path, GOOD))
    assert manifest.num_classes == 2 and manifest.split("train").samples == 5
    assert manifest.shard_paths("val") == [str(tmp_path.resolve() / "val/val-000000.tar")]


DAMAGE = [  # (field changed, new value, the field the message names, what it says)
    ("splits.train.samples", "many", "splits.train.samples", "must be a whole number, found str 'many'"),
    ("splits.train.samples", 6, "splits.train.samples", "is 6 but its shards hold 5 samples"),
    ("splits.train.shards.0.samples", 2.5, "splits.train.shards[0].samples", "must be a whole number"),
    ("splits.train.shards.0.samples", -1, "splits.train.shards[0].samples", "must be >= 0"),
    ("splits.train.shards.1.bytes", True, "splits.train.shards[1].bytes", "must be a whole number"),
    ("splits.train.shards.0.sha256", "xyz", "splits.train.shards[0].sha256", "must be 64 lowercase hex"),
    ("splits.train.shards.0.sha256", KeyError, "splits.train.shards[0].sha256", "is missing"),
    ("splits.train.shards.1.name", "train/train-000000.tar", "splits.train.shards[1].name", "listed twice"),
    ("splits.val.shards", {"a": 1}, "splits.val.shards", "must be a list of shards"),
    ("splits", {}, "splits", "is empty"),
    ("classes", KeyError, "classes", "must be a list"),
    ("classes.1.index", 7, "classes[1].index", "is 7, expected 1"),
    ("classes.0.wnid", 5, "classes[0].wnid", "must be a string"),
    ("stats.mean", [1, 2], "stats.mean", "must hold 3 numbers, found 2"),
    ("stats.pca.eigenvectors", [[1, 0, 0]], "stats.pca.eigenvectors", "must hold 3 rows"),
    ("stats.std", ["a", 1, 1], "stats.std[0]", "must be a number"),
    ("version", 2, "version", "is 2, this code reads 1"),
    ("format", "something-else", "format", "this is not a data_prep manifest"),
]


@pytest.mark.parametrize(
    ("field", "value", "named", "says"), DAMAGE, ids=[d[0] + "=" + repr(d[1]) for d in DAMAGE]
)
def test_each_damaged_field_is_one_line_naming_the_manifest_field_and_fix(
    tmp_path, field, value, named, says
):
    root = _write(tmp_path / "shards", _set(GOOD, field, value))
    with pytest.raises(ValueError) as error:
        load_manifest(root)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"{root.resolve() / MANIFEST_NAME}: field {named} ")
    assert says in message
    assert "data_prep" in message or "data.root" in message  # the fix


@pytest.mark.parametrize(
    "name",
    ["../../elsewhere/x.tar", "/etc/passwd", "train/../../x.tar", "~/x.tar", "", "train\\..\\..\\x.tar"],
)
def test_a_shard_name_leading_outside_the_prep_output_is_refused(tmp_path, name):
    root = _write(tmp_path / "shards", _set(GOOD, "splits.val.shards.0.name", name))
    with pytest.raises(
        ValueError, match=r"field splits\.val\.shards\[0\]\.name is .*leads outside the prep output"
    ):
        load_manifest(root)


def test_a_manifest_that_is_not_json_names_itself(tmp_path):
    (tmp_path / MANIFEST_NAME).write_text('{"format": ')
    with pytest.raises(ValueError, match=rf"{tmp_path / MANIFEST_NAME} is not valid JSON .*rerun data_prep"):
        load_manifest(tmp_path)


def _raw_folders(root: Path) -> Path:
    (root / "train" / "n01440764").mkdir(parents=True)
    (root / "train" / "n01440764" / "n01440764_10026.JPEG").write_bytes(b"\xff\xd8")
    return root


def _raw_tarballs(root: Path) -> Path:
    root.mkdir()
    (root / "ILSVRC2012_img_val.tar").write_bytes(b"")
    return root


def _file(root: Path) -> Path:
    root.write_text("x")
    return root


def _manifest_file(root: Path) -> Path:
    return _write(root, GOOD) / MANIFEST_NAME


def _empty(root: Path) -> Path:
    root.mkdir()
    return root


def _in_progress(root: Path) -> Path:
    (root / "train").mkdir(parents=True)
    (root / ".prep-state" / "train").mkdir(parents=True)
    for index in range(3):
        (root / "train" / f"train-{index:06d}.tar").write_bytes(b"")
        (root / ".prep-state" / "train" / f"train-{index:06d}.tar.done.json").write_text("{}")
    return root


def _in_progress_old_layout(root: Path) -> Path:
    (root / "val").mkdir(parents=True)
    (root / "val" / "val-000000.tar.done.json").write_text("{}")
    return root


def _shard_folder(root: Path) -> Path:
    (_write(root, GOOD) / "train").mkdir()
    return root / "train"


ROOTS = {  # how the folder is made -> what the message must say
    "missing": (lambda root: root, r"data.root .* does not exist; make it with `python -m data_prep"),
    "a file": (_file, r"data.root .* is a file, not a folder; set data.root to the data_prep output folder"),
    "the manifest": (_manifest_file, r"is the manifest itself; set data.root=.*shards \(its folder\)"),
    "a shard folder": (
        _shard_folder,
        r"data.root .*shards/train is a folder inside a prep output; set data.root=.*shards ",
    ),
    "empty": (
        _empty,
        r"no manifest.json in .*: the folder is empty; set data.root .* or run `python -m data_prep",
    ),
    "raw folders": (_raw_folders, r"holds raw ImageNet .*python -m data_prep source=.* out=SHARDS"),
    "raw tarballs": (_raw_tarballs, r"holds raw ImageNet .*ILSVRC tarballs.*out=SHARDS"),
    "prep in progress": (
        _in_progress,
        r"still in progress \(3 shards written, no manifest yet\).*it resumes",
    ),
    "old prep in progress": (_in_progress_old_layout, r"still in progress \(1 shards written"),
}


@pytest.mark.parametrize("kind", list(ROOTS))
def test_a_wrong_data_root_says_what_it_found_and_what_to_run(tmp_path, kind):
    make, says = ROOTS[kind]
    root = make(tmp_path / "shards")
    with pytest.raises(FileNotFoundError) as error:
        load_manifest(root)
    assert "\n" not in str(error.value)
    assert re.search(says, str(error.value)), str(error.value)
