"""Photo-like pixels for generated data sets: crops, flips and colour shifts of foolbox's 20 real ImageNet
photos, with gradients and sensor-like noise, so decoding and resizing a generated file costs what a real
photo costs (flat colours compress to nothing and decode far faster than photos)."""

from __future__ import annotations

import functools
import importlib.util
import io
from pathlib import Path

import numpy as np
from PIL import Image


@functools.cache
def foolbox_photos() -> tuple[np.ndarray, ...]:
    """foolbox's 20 ImageNet validation photos (512x512 RGB), or () when foolbox is not installed."""
    # find the files without importing foolbox: it is installed without its dependencies (eagerpy, ...)
    spec = importlib.util.find_spec("foolbox")
    if spec is None or not spec.submodule_search_locations:
        return ()
    folder = Path(next(iter(spec.submodule_search_locations))) / "data"
    paths = sorted(folder.glob("imagenet_*.jpg"))
    return tuple(np.asarray(Image.open(p).convert("RGB")) for p in paths)


def _gradient(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    angle = rng.uniform(0, 2 * np.pi)
    xs = np.linspace(0, np.cos(angle), width, dtype=np.float32)
    ys = np.linspace(0, np.sin(angle), height, dtype=np.float32)
    ramp = ys[:, None] + xs[None, :]
    ramp = ((ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6))[..., None]
    # light to shade with a tint, like sky or a lit wall (not independent per channel: photos are not)
    low = (rng.uniform(0, 255) + rng.uniform(-25, 25, 3)).astype(np.float32)
    high = (rng.uniform(0, 255) + rng.uniform(-25, 25, 3)).astype(np.float32)
    return low + (high - low) * ramp


def photo_like(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """An HxWx3 uint8 image: a random crop of a real photo (flipped, colour-shifted, resized), blended with a
    gradient and noise; without foolbox, gradients and noise alone."""
    photos = foolbox_photos()
    if photos:
        photo = photos[rng.integers(len(photos))]
        side = int(rng.integers(160, 512))
        top, left = rng.integers(0, 512 - side + 1, 2)
        crop = Image.fromarray(photo[top : top + side, left : left + side])
        if rng.random() < 0.5:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        base = np.asarray(crop.resize((width, height), Image.Resampling.BILINEAR), dtype=np.float32)
        # mostly a common gain and offset (lighting), a little per channel (white balance): channels stay
        # correlated, as in real photos, so the colour PCA has a dominant brightness component
        gain = rng.uniform(0.7, 1.3) * rng.uniform(0.92, 1.08, 3)
        offset = rng.uniform(-30, 30) + rng.uniform(-8, 8, 3)
        base = base * gain.astype(np.float32) + offset.astype(np.float32)
        pixels = 0.8 * base + 0.2 * _gradient(rng, width, height)
    else:
        pixels = _gradient(rng, width, height)
    pixels += rng.integers(-10, 11, (height, width, 3), dtype=np.int16)  # sensor-like noise, cheap to draw
    return np.clip(pixels, 0, 255).astype(np.uint8)


def awkward_format_bytes(image: Image.Image, variant: str) -> bytes:
    """``image`` in one of ImageNet's awkward formats (each still the same picture once prep fixes it):
    "cmyk", "grey", "png" (a PNG that will be named .JPEG), "exif" (stored rotated, with the EXIF tag that
    turns it upright), or "jpeg" (a plain RGB JPEG)."""
    buffer = io.BytesIO()
    if variant == "cmyk":
        image.convert("CMYK").save(buffer, format="JPEG", quality=90)
    elif variant == "grey":
        image.convert("L").save(buffer, format="JPEG", quality=90)
    elif variant == "png":
        image.save(buffer, format="PNG")
    elif variant == "exif":
        exif = Image.Exif()
        exif[0x0112] = 6  # rotate 90 CW to display
        image.transpose(Image.Transpose.ROTATE_90).save(
            buffer, format="JPEG", quality=90, exif=exif.tobytes()
        )
    elif variant == "jpeg":
        image.save(buffer, format="JPEG", quality=90)
    else:
        raise ValueError(f"unknown image variant {variant!r}")
    return buffer.getvalue()
