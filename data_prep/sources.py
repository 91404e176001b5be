"""Source layouts -> lists of sample references (a file, or a byte range in an archive); no image is read.

Layouts under ``source``:

* class folders ``train/<wnid>/*.JPEG`` and ``val/<wnid>/*.JPEG`` (or a flat ``val/`` folder plus a label
  file);
* the official archives ``ILSVRC2012_img_train.tar`` (a tar of per-class tars) and
  ``ILSVRC2012_img_val.tar``, read as streams: only the tar headers are scanned, and each member becomes
  (archive, data offset, size), so workers read any sample by one seek, in any order (the global shuffle),
  without unpacking to disk.
"""

from __future__ import annotations

import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

TRAIN_ARCHIVE = "ILSVRC2012_img_train.tar"
VAL_ARCHIVE = "ILSVRC2012_img_val.tar"


@dataclass(frozen=True, slots=True)  # one per image: 1.28M of them for ImageNet
class SampleRef:
    key: str  # the source file's stem: the shard's __key__, identical across layouts
    wnid: str | None  # None until the val labels are attached
    path: str  # the file, or the archive holding it
    offset: int  # byte offset of the data inside ``path``; -1: the whole file
    size: int  # bytes at ``offset``; for whole files, the size seen by the scan (-1: could not stat)
    source: str  # a name for messages and the manifest's rejects, relative to the source root


def sample_key(filename: str) -> str:
    """The WebDataset key of a file: its stem, dots replaced (WebDataset splits keys at the first dot)."""
    stem = filename.rsplit("/", 1)[-1]
    stem = stem.rsplit(".", 1)[0] if "." in stem else stem
    return stem.replace(".", "_")


def read_sample(ref: SampleRef) -> bytes:
    """Reads one sample's bytes; the caller turns OSError (missing, unreadable, a directory) into a reject."""
    with open(ref.path, "rb") as f:
        if ref.offset < 0:
            return f.read()
        f.seek(ref.offset)
        return f.read(ref.size)


def _folder_files(folder: Path, root: Path, wnid: str | None) -> list[SampleRef]:
    refs = []
    for entry in os.scandir(folder):
        if entry.name.startswith(".") or entry.is_dir():
            continue  # hidden files (.DS_Store) are not samples; broken links and unreadable files are
        rel = os.path.relpath(entry.path, root)
        # the size is only a resume check (a changed file changes its shard's fingerprint); reads take it all
        try:
            size = entry.stat().st_size
        except OSError:
            size = -1  # broken link or unreadable: prep rejects it when it tries to read it
        refs.append(SampleRef(sample_key(entry.name), wnid, entry.path, -1, size, rel))
    return refs


def class_folders(split_dir: Path) -> list[Path]:
    return sorted((p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith(".")), key=str)


def scan_class_folders(split_dir: Path, root: Path) -> list[SampleRef]:
    """``split_dir/<wnid>/*``; an empty class folder is an error (a half-copied data set)."""
    refs: list[SampleRef] = []
    for folder in class_folders(split_dir):
        files = _folder_files(folder, root, folder.name)
        if not files:
            raise ValueError(
                f"class folder {folder} is empty; copy its images again or remove the folder "
                f"(every class needs at least one image)"
            )
        refs.extend(files)
    return refs


def scan_flat_folder(split_dir: Path, root: Path) -> list[SampleRef]:
    return _folder_files(split_dir, root, None)


def _members(tar: tarfile.TarFile) -> list[tarfile.TarInfo]:
    return [m for m in tar if m.isfile() and not m.name.rsplit("/", 1)[-1].startswith(".")]


def scan_train_archive(archive: Path, root: Path) -> list[SampleRef]:
    """The tar of per-class tars: the inner members' offsets are absolute positions in the outer file, because
    the inner tar is opened on the outer file object positioned at its data offset."""
    refs: list[SampleRef] = []
    rel = os.path.relpath(archive, root)
    with open(archive, "rb") as f, tarfile.open(fileobj=f, mode="r:") as outer:
        for inner_info in _members(outer):
            wnid = sample_key(inner_info.name)
            f.seek(inner_info.offset_data)
            with tarfile.open(fileobj=f, mode="r:") as inner:
                # a class tar without its end-of-archive blocks must not read on into the outer tar's headers
                end = inner_info.offset_data + inner_info.size
                members = [m for m in _members(inner) if m.offset_data + m.size <= end]
            if not members:
                raise ValueError(
                    f"class archive {inner_info.name} inside {archive} is empty; "
                    f"download {TRAIN_ARCHIVE} again"
                )
            for m in members:
                refs.append(
                    SampleRef(
                        sample_key(m.name),
                        wnid,
                        str(archive),
                        m.offset_data,
                        m.size,
                        f"{rel}/{inner_info.name}/{m.name}",
                    )
                )
    return refs


def train_archive_classes(archive: Path) -> list[str]:
    """The wnids in the train archive, from the outer headers only (1000 headers, not 1.28M)."""
    with tarfile.open(archive, mode="r:") as outer:
        return sorted(sample_key(m.name) for m in _members(outer))


def scan_val_archive(archive: Path, root: Path) -> list[SampleRef]:
    rel = os.path.relpath(archive, root)
    with tarfile.open(archive, mode="r:") as tar:
        return [
            SampleRef(sample_key(m.name), None, str(archive), m.offset_data, m.size, f"{rel}/{m.name}")
            for m in _members(tar)
        ]


@dataclass(frozen=True)
class SourceLayout:
    """Where each split lives under the source root; found once, before any scan."""

    root: Path
    train: Path | None  # a folder of class folders, or the train archive
    val: Path | None  # a folder (class folders or flat), or the val archive

    @property
    def val_is_labelled_by_folders(self) -> bool:
        return self.val is not None and self.val.is_dir() and bool(class_folders(self.val))


def find_layout(root: Path) -> SourceLayout:
    if not root.is_dir():
        raise FileNotFoundError(
            f"source {root} does not exist or is not a folder; set source= to the folder holding train/ and "
            f"val/ (class folders) or {TRAIN_ARCHIVE} and {VAL_ARCHIVE}"
        )
    train = root / "train" if (root / "train").is_dir() else None
    train = train or (root / TRAIN_ARCHIVE if (root / TRAIN_ARCHIVE).is_file() else None)
    val = root / "val" if (root / "val").is_dir() else None
    val = val or (root / VAL_ARCHIVE if (root / VAL_ARCHIVE).is_file() else None)
    return SourceLayout(root=root, train=train, val=val)


def scan_split(location: Path, root: Path, split: str) -> list[SampleRef]:
    if location.is_file():
        return scan_train_archive(location, root) if split == "train" else scan_val_archive(location, root)
    if split == "train" or class_folders(location):
        return scan_class_folders(location, root)
    return scan_flat_folder(location, root)


def layout_classes(layout: SourceLayout) -> list[str]:
    """The class wnids, sorted (index order = sorted wnids, as torchvision's ImageFolder and the devkit)."""
    if layout.train is None:
        return (
            [] if layout.val is None or not layout.val_is_labelled_by_folders else _folder_names(layout.val)
        )
    if layout.train.is_file():
        return train_archive_classes(layout.train)
    return _folder_names(layout.train)


def _folder_names(split_dir: Path) -> list[str]:
    return [p.name for p in class_folders(split_dir)]
