"""The embedded demo set: scikit-learn's 1,797 handwritten digits in ImageNet layout, on photo backgrounds.

Each digit (8x8, upscaled) is painted in dark ink over a softened crop of one of foolbox's 20 real
ImageNet photos, large and inside the centre square (so prep's centre crop keeps it), and saved as a JPEG
of an ImageNet-like shape (240-320 px wide, 4:3) in ``train/<wnid>/`` or ``val/<wnid>/`` (10 classes,
synthetic wnids n99000000..n99000009, ~20% of each class held out for val). The photos give the files
real-photo statistics (compression, decode cost, colour PCA) while every label stays true. A few files take
ImageNet's awkward formats that prep must fix (CMYK, greyscale, a PNG named .JPEG, an EXIF-rotated JPEG)
and two are broken (truncated, not an image), so the demo's manifest shows both the fix and the reject
paths. ``LOC_synset_mapping.txt`` names the classes "digit 0" .. "digit 9".
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from alexnet_common.cli import fail, optional, parse_bool, parse_overrides
from data_prep.photos import awkward_format_bytes, photo_like

DEMO_CLASSES = 10
DEMO_SEED = 1234
VAL_FRACTION = 0.2
WNID_PREFIX = "n99"
# 15 train and 4 val shards: enough for 2 ranks x 2 loader workers, each of which needs a shard of its own
DEMO_SHARD_SAMPLES = 100


def demo_wnid(digit: int) -> str:
    return f"{WNID_PREFIX}{digit:06d}"


def render_digit(digit_image: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """One 8x8 digit (values 0..16) painted in dark ink over a softened photo crop.

    The digit is large and sits inside the centre square, so prep's centre 256x256 crop and the loader's
    random 227 crops keep all of it. The photo is pulled towards a light grey so the ink always contrasts:
    a demo that trains in minutes on a CPU needs a learnable signal, and the photo still gives the files
    real-photo statistics (compression, decode cost, colour PCA).
    """
    width = int(rng.integers(240, 321))
    height = width * 3 // 4
    photo = photo_like(rng, width, height).astype(np.float32)
    canvas = 0.45 * photo + 0.55 * 190.0
    side = int(rng.uniform(0.7, 0.9) * height)
    mask = Image.fromarray((digit_image / 16.0 * 255).astype(np.uint8)).resize(
        (side, side), Image.Resampling.BICUBIC
    )
    alpha = np.asarray(mask, dtype=np.float32)[..., None] / 255.0 * 0.95
    slack = height - side  # the centre square is height x height, centred horizontally
    top = int(rng.integers(0, slack + 1))
    left = (width - height) // 2 + int(rng.integers(0, slack + 1))
    colour = rng.uniform(10, 50) + rng.uniform(-10, 10, 3)  # dark ink with a slight tint
    region = canvas[top : top + side, left : left + side]
    canvas[top : top + side, left : left + side] = region * (1 - alpha) + colour * alpha
    return Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8))


VARIANTS = {7: "cmyk", 19: "grey", 31: "png", 43: "exif"}  # sample numbers of the awkward formats


def _write_broken(root: Path, rng: np.random.Generator) -> None:
    """Two broken files in train/, which prep lists in the manifest's rejected and skips."""
    good = io.BytesIO()
    Image.fromarray(photo_like(rng, 320, 240)).save(good, format="JPEG", quality=90)
    (root / "train" / demo_wnid(3) / f"{demo_wnid(3)}_truncated.JPEG").write_bytes(good.getvalue()[:4000])
    (root / "train" / demo_wnid(5) / f"{demo_wnid(5)}_notanimage.JPEG").write_bytes(
        b"<html>404 Not Found</html>\n"
    )


def build_demo_source(root: Path) -> Path:
    """Writes the demo tree under ``root`` (train/, val/, LOC_synset_mapping.txt) and returns ``root``."""
    from sklearn.datasets import load_digits  # heavy import, only the demo needs it

    root = Path(root)
    digits = load_digits()
    rng = np.random.default_rng(DEMO_SEED)
    val_number = 0
    for digit in range(DEMO_CLASSES):
        wnid = demo_wnid(digit)
        members = np.flatnonzero(digits.target == digit)
        members = members[rng.permutation(len(members))]
        n_val = round(len(members) * VAL_FRACTION)
        for split in ("train", "val"):
            (root / split / wnid).mkdir(parents=True, exist_ok=True)
        for position, sample in enumerate(members):
            image = render_digit(digits.images[sample], rng)
            if position < n_val:
                val_number += 1
                path = root / "val" / wnid / f"ILSVRC2012_val_{val_number:08d}.JPEG"
            else:
                path = root / "train" / wnid / f"{wnid}_{int(sample)}.JPEG"
            path.write_bytes(awkward_format_bytes(image, VARIANTS.get(int(sample), "jpeg")))
    _write_broken(root, rng)
    mapping = "".join(f"{demo_wnid(d)} digit {d}\n" for d in range(DEMO_CLASSES))
    (root / "LOC_synset_mapping.txt").write_text(mapping)
    return root


def main(argv: list[str] | None = None) -> None:
    """``python -m data_prep.demo out=demo``: the demo source in out/source, its shards in out/shards."""
    from data_prep.prep import run_prep

    args = parse_overrides(
        "python -m data_prep.demo",
        sys.argv[1:] if argv is None else argv,
        {
            "out": (Path, Path("demo"), "folder for source/ (the demo tree) and shards/"),
            "workers": (optional(int), None, "prep worker processes (null: one per core)"),
            "progress": (parse_bool, True, "show progress bars"),
        },
    )
    source = args["out"] / "source"
    try:
        if not (source / "LOC_synset_mapping.txt").is_file():  # written last: its presence means complete
            build_demo_source(source)
        run_prep(
            source,
            args["out"] / "shards",
            workers=args["workers"],
            shard_samples=DEMO_SHARD_SAMPLES,
            progress=args["progress"],
        )
    except (OSError, ValueError) as exc:
        fail("python -m data_prep.demo", str(exc))


if __name__ == "__main__":
    main()
