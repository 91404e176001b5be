"""What ``load_manifest`` checks before anything reads a shard: the manifest's fields, and a ``data.root``
that is not a prep output at all.

Every error is one line naming the manifest (or the folder), the field and the fix: a hand-edited or damaged
manifest must not surface as ``invalid literal for int()`` from deep inside the loader, and a shard name must
never lead the loader outside the prep output (``../../elsewhere/x.tar``).
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath
from typing import Any

from data_prep.prep_state import PREP_STATE_DIR, SIDECAR_SUFFIX

SHA256 = re.compile(r"[0-9a-f]{64}")
WNID = re.compile(r"n\d{8}")
IMAGENET_ARCHIVES = ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar")
IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")
REWRITE = "rerun data_prep with the same source= and out= to rewrite manifest.json"


class ManifestError(ValueError):
    """One field of one manifest is wrong: ``str()`` is the whole one-line message."""

    def __init__(self, path: Path, field: str, problem: str, fix: str = REWRITE) -> None:
        super().__init__(f"{path}: field {field} {problem}; {fix}")


def _want(path: Path, field: str, value: Any, kind: type | tuple[type, ...], what: str) -> Any:
    # bool is an int to isinstance, never a count
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise ManifestError(path, field, f"must be {what}, found {type(value).__name__} {value!r:.60}")
    return value


def _count(path: Path, field: str, value: Any) -> int:
    _want(path, field, value, int, "a whole number")
    if value < 0:
        raise ManifestError(path, field, f"must be >= 0, found {value}")
    return value


def _numbers(path: Path, field: str, value: Any, length: int) -> None:
    _want(path, field, value, list, f"a list of {length} numbers")
    if len(value) != length:
        raise ManifestError(path, field, f"must hold {length} numbers, found {len(value)}")
    for index, number in enumerate(value):
        _want(path, f"{field}[{index}]", number, (int, float), "a number")


def _shard_name(path: Path, field: str, name: Any) -> None:
    _want(path, field, name, str, "a relative path string")
    pure = PurePosixPath(name)
    if not name or pure.is_absolute() or "\\" in name or ".." in pure.parts or name.startswith("~"):
        raise ManifestError(
            path,
            field,
            f"is {name!r}, which leads outside the prep output {path.parent}",
            "shard names are relative paths inside it (like train/train-000000.tar); " + REWRITE,
        )


def _check_shard(path: Path, field: str, shard: Any) -> None:
    _want(path, field, shard, dict, "an object {name, samples, bytes, sha256}")
    for key in ("name", "samples", "bytes", "sha256"):
        if key not in shard:
            raise ManifestError(path, f"{field}.{key}", "is missing")
    unknown = sorted(set(shard) - {"name", "samples", "bytes", "sha256"})
    if unknown:
        raise ManifestError(path, f"{field}.{unknown[0]}", "is not a shard field")
    _shard_name(path, f"{field}.name", shard["name"])
    _count(path, f"{field}.samples", shard["samples"])
    _count(path, f"{field}.bytes", shard["bytes"])
    sha = _want(path, f"{field}.sha256", shard["sha256"], str, "a sha256 (64 hex digits)")
    if not SHA256.fullmatch(sha):
        raise ManifestError(path, f"{field}.sha256", f"must be 64 lowercase hex digits, found {sha!r:.70}")


def _check_split(path: Path, name: str, split: Any, seen: set[str]) -> None:
    field = f"splits.{name}"
    _want(path, field, split, dict, "an object {samples, shards}")
    for key in ("samples", "shards"):
        if key not in split:
            raise ManifestError(path, f"{field}.{key}", "is missing")
    samples = _count(path, f"{field}.samples", split["samples"])
    shards = _want(path, f"{field}.shards", split["shards"], list, "a list of shards")
    for index, shard in enumerate(shards):
        _check_shard(path, f"{field}.shards[{index}]", shard)
        if shard["name"] in seen:
            raise ManifestError(path, f"{field}.shards[{index}].name", f"{shard['name']!r} is listed twice")
        seen.add(shard["name"])
    total = sum(shard["samples"] for shard in shards)
    if total != samples:
        raise ManifestError(path, f"{field}.samples", f"is {samples} but its shards hold {total} samples")


def _check_classes(path: Path, classes: Any) -> None:
    _want(path, "classes", classes, list, "a list of {index, wnid, name}")
    if not classes:
        raise ManifestError(path, "classes", "is empty")
    for position, entry in enumerate(classes):
        field = f"classes[{position}]"
        _want(path, field, entry, dict, "an object {index, wnid, name}")
        for key in ("index", "wnid", "name"):
            if key not in entry:
                raise ManifestError(path, f"{field}.{key}", "is missing")
        if _count(path, f"{field}.index", entry["index"]) != position:
            raise ManifestError(path, f"{field}.index", f"is {entry['index']}, expected {position}")
        _want(path, f"{field}.wnid", entry["wnid"], str, "a string")
        _want(path, f"{field}.name", entry["name"], str, "a string")


def _check_stats(path: Path, stats: Any) -> None:
    if stats is None:
        return
    _want(path, "stats", stats, dict, "null or an object {samples, mean, std, pca}")
    for key in ("samples", "mean", "std", "pca"):
        if key not in stats:
            raise ManifestError(path, f"stats.{key}", "is missing")
    _count(path, "stats.samples", stats["samples"])
    _numbers(path, "stats.mean", stats["mean"], 3)
    _numbers(path, "stats.std", stats["std"], 3)
    pca = _want(path, "stats.pca", stats["pca"], dict, "an object {eigenvalues, eigenvectors}")
    for key in ("eigenvalues", "eigenvectors"):
        if key not in pca:
            raise ManifestError(path, f"stats.pca.{key}", "is missing")
    _numbers(path, "stats.pca.eigenvalues", pca["eigenvalues"], 3)
    rows = _want(path, "stats.pca.eigenvectors", pca["eigenvectors"], list, "3 rows of 3 numbers")
    if len(rows) != 3:
        raise ManifestError(path, "stats.pca.eigenvectors", f"must hold 3 rows, found {len(rows)}")
    for index, row in enumerate(rows):
        _numbers(path, f"stats.pca.eigenvectors[{index}]", row, 3)


def validate_manifest(data: Any, path: Path, *, format_name: str, version: int) -> None:
    """ManifestError (a ValueError, one line) at the first field that is missing, of the wrong type, or
    inconsistent with the rest: split counts against their shards, class indices, shard names."""
    _want(path, "(the whole file)", data, dict, "a JSON object")
    if data.get("format") != format_name:
        raise ManifestError(
            path,
            "format",
            f"is {data.get('format')!r}, not {format_name!r}: this is not a data_prep manifest",
            "set data.root to a data_prep output folder",
        )
    found = _want(path, "version", data.get("version"), int, "a whole number")
    if found != version:
        raise ManifestError(path, "version", f"is {found}, this code reads {version}", REWRITE)
    _want(path, "settings", data.get("settings", {}), dict, "an object")
    _want(path, "rejected", data.get("rejected", []), list, "a list")
    _check_classes(path, data.get("classes"))
    splits = _want(path, "splits", data.get("splits"), dict, "an object {split: {samples, shards}}")
    if not splits:
        raise ManifestError(path, "splits", "is empty")
    seen: set[str] = set()
    for name, split in splits.items():
        _check_split(path, name, split, seen)
    _check_stats(path, data.get("stats"))


def _holds_images(folder: Path) -> bool:
    return any(path.suffix.lower() in IMAGE_SUFFIXES for path in _first(folder.iterdir(), 50))


def _first(paths: Any, count: int) -> list[Path]:
    found = []
    for path in paths:
        found.append(path)
        if len(found) == count:
            break
    return found


def _is_raw_imagenet(root: Path) -> bool:
    if any((root / name).is_file() for name in IMAGENET_ARCHIVES):
        return True
    for folder in (root, root / "train", root / "val"):
        if not folder.is_dir():
            continue
        names = _first(folder.iterdir(), 20)
        classes = [path for path in names if path.is_dir() and WNID.fullmatch(path.name)]
        if classes and _holds_images(classes[0]):
            return True
        if folder.name == "val" and _holds_images(folder):
            return True
    return False


def _prep_progress(root: Path) -> int | None:
    """Shards (or their sidecars) a data_prep run left without writing the manifest yet; None: no sign."""
    state = root / PREP_STATE_DIR
    shards = [path for split in ("train", "val") for path in (root / split).glob("*.tar")]
    sidecars = list(root.glob(f"*/*{SIDECAR_SUFFIX}")) + list(state.glob(f"*/*{SIDECAR_SUFFIX}"))
    if state.is_dir() or shards or sidecars:
        return max(len(shards), len(sidecars))
    return None


def explain_root(root: Path, manifest_name: str) -> str:
    """Why ``root`` (no manifest in it) is not a prep output: what it holds and what to run."""
    prep = f"python -m data_prep source=IMAGENET out={root}"
    if not root.exists():
        return f"data.root {root} does not exist; make it with `{prep}` or set data.root to a prep output"
    if root.is_file():
        if root.name == manifest_name:
            return f"data.root {root} is the manifest itself; set data.root={root.parent} (its folder)"
        return (
            f"data.root {root} is a file, not a folder; set data.root to the data_prep output folder "
            f"(the one holding {manifest_name}, train/ and val/)"
        )
    if (root.parent / manifest_name).is_file():
        return (
            f"data.root {root} is a folder inside a prep output; set data.root={root.parent} (its manifest's)"
        )
    if not any(root.iterdir()):
        empty = "the folder is empty; set data.root to a prep output"
        return f"no {manifest_name} in {root}: {empty} or run `{prep}`"
    if _is_raw_imagenet(root):
        return (
            f"no {manifest_name} in {root}: it holds raw ImageNet (class folders of JPEGs or ILSVRC "
            f"tarballs), which the loader does not read; shard it with "
            f"`python -m data_prep source={root} out=SHARDS` and set data.root=SHARDS"
        )
    progress = _prep_progress(root)
    if progress is not None:
        return (
            f"no {manifest_name} in {root}: a data_prep output still in progress ({progress} shards written, "
            f"no manifest yet); wait for it or rerun data_prep with the same source= and out={root} (it "
            f"resumes), then train"
        )
    names = ", ".join(sorted(path.name for path in _first(root.iterdir(), 5)))
    return f"no {manifest_name} in {root} (it holds {names}, ...); set data.root to a data_prep output folder"
