"""One source image in, one RGB JPEG out (or the reason it was rejected).

Never raises for a bad image: ImageNet holds CMYK and greyscale JPEGs, a PNG named ``.JPEG``, EXIF-rotated
photos, and any copy of it may hold truncated or empty files. Each becomes either a fixed RGB image or a
``Rejected`` with a reason the manifest lists.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

ResizeMode = Literal["paper", "short256", "none"]
RESIZE_MODES: tuple[str, ...] = ("paper", "short256", "none")
TARGET_SHORT_SIDE = 256
# ImageNet's largest image has ~ 18 Mpx (rare 4000x4500 photos); anything far beyond is a bomb or corrupt.
DEFAULT_MAX_PIXELS = 89_478_485  # PIL's own MAX_IMAGE_PIXELS: we enforce it as a reject, not a warning

# Truncated files must fail loudly (and become rejects) instead of decoding grey bottoms.
ImageFile.LOAD_TRUNCATED_IMAGES = False


@dataclass(frozen=True)
class Encoded:
    jpeg: bytes
    source_size: tuple[int, int]  # (width, height) as stored in the file, before EXIF rotation
    pixels: np.ndarray | None  # the output's RGB uint8 pixels, only when asked for (statistics)


@dataclass(frozen=True)
class Rejected:
    reason: str


def validate_resize(resize: str) -> None:
    if resize not in RESIZE_MODES:
        raise ValueError(f"resize={resize!r} is not one of {', '.join(RESIZE_MODES)}; set resize=paper")


def _draft_size(width: int, height: int) -> tuple[int, int]:
    """The smallest decode size whose shorter side still covers the target, for libjpeg's DCT scaling."""
    scale = TARGET_SHORT_SIDE / min(width, height)
    return max(1, int(width * scale) + 1), max(1, int(height * scale) + 1)


def resize_backend():
    """(torch, torchvision.transforms.v2.functional), imported on first use: a prep that fails on a bad path
    answers without importing torch; run_prep imports it once before forking, so workers share it."""
    import torch
    from torchvision.transforms.v2 import functional

    return torch, functional


def _resize(image: Image.Image, resize: str) -> np.ndarray:
    """HxWx3 uint8 pixels after the resize. torch's antialiased bilinear on channels-last uint8 (a SIMD
    kernel) is ~3x faster here than PIL's, which made resizing the largest cost of a prep (bench/prep.py)."""
    width, height = image.size
    scale = TARGET_SHORT_SIDE / min(width, height)
    if resize == "short256":
        size = [max(1, round(height * scale)), max(1, round(width * scale))]
    else:  # paper: resample only the centre square the crop keeps (cheaper than resizing, then cropping)
        side = min(width, height)
        left, top = (width - side) // 2, (height - side) // 2
        image = image.crop((left, top, left + side, top + side))  # dense, so torch sees channels-last memory
        size = [TARGET_SHORT_SIDE, TARGET_SHORT_SIDE]
    torch, functional = resize_backend()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "array is not writable": nothing here writes to it
        pixels = torch.from_numpy(np.asarray(image)).permute(2, 0, 1)  # CHW view of HWC memory
    bilinear = functional.InterpolationMode.BILINEAR
    resized = functional.resize(pixels, size, interpolation=bilinear, antialias=True)
    return resized.permute(1, 2, 0).numpy()  # channels-last in, channels-last out: already contiguous HWC


def _bomb_text(exc: Exception) -> str:
    return str(exc).split(", could be")[0]  # PIL's "... exceeds limit of N pixels, could be ... DOS attack."


def _open(data: bytes, max_pixels: int) -> Image.Image | Rejected:
    if not data:
        return Rejected("empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        return Rejected("not an image (no known image format)")
    except Image.DecompressionBombError as exc:
        return Rejected(f"decompression bomb ({_bomb_text(exc)})")
    except (OSError, ValueError, SyntaxError) as exc:
        return Rejected(f"undecodable ({exc})")
    width, height = image.size
    if width * height > max_pixels:
        return Rejected(f"decompression bomb ({width}x{height} = {width * height} pixels > {max_pixels})")
    if width < 1 or height < 1:
        return Rejected(f"empty image ({width}x{height})")
    return image


def _decode_rgb(image: Image.Image, resize: str) -> Image.Image | Rejected:
    try:
        if image.format == "JPEG" and resize != "none" and image.mode in ("RGB", "L"):
            image.draft(image.mode, _draft_size(*image.size))
        image.load()
        ImageOps.exif_transpose(image, in_place=True)
        if image.mode != "RGB":
            # CMYK, greyscale, palette and alpha PNGs: composite alpha on black would be arbitrary, drop it
            image = image.convert("RGB")
    except Image.DecompressionBombError as exc:
        return Rejected(f"decompression bomb ({_bomb_text(exc)})")
    except OSError as exc:
        text = str(exc)
        reason = "truncated image" if "truncated" in text else "undecodable"
        return Rejected(f"{reason} ({text})")
    except (ValueError, SyntaxError, EOFError, IndexError, TypeError) as exc:
        return Rejected(f"undecodable ({exc!r})")
    return image


def _is_plain_rgb_jpeg(image: Image.Image) -> bool:
    orientation = image.getexif().get(0x0112, 1)
    return image.format == "JPEG" and image.mode == "RGB" and orientation in (1, None)


def encode_image(
    data: bytes,
    *,
    resize: str = "paper",
    quality: int = 90,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    want_pixels: bool = False,
) -> Encoded | Rejected:
    """Decodes ``data``, fixes its format, resizes as ``resize`` says and re-encodes it as an RGB JPEG.

    ``resize="none"`` keeps the source bytes when they already are a plain RGB JPEG (true raw JPEG); other
    sources (CMYK, grey, PNG, EXIF-rotated) are re-encoded so every shard holds RGB JPEGs.
    """
    opened = _open(data, max_pixels)
    if isinstance(opened, Rejected):
        return opened
    source_size = opened.size
    keep_source_bytes = resize == "none" and _is_plain_rgb_jpeg(opened)
    decoded = _decode_rgb(opened, resize)
    if isinstance(decoded, Rejected):
        return decoded
    pixels = np.asarray(decoded) if resize == "none" else _resize(decoded, resize)
    if keep_source_bytes:
        jpeg = data
    else:
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality)
        jpeg = buffer.getvalue()
    return Encoded(jpeg=jpeg, source_size=source_size, pixels=pixels if want_pixels else None)
