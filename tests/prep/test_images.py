"""encode_image: each of ImageNet's awkward formats fixed, each broken input a reason, never an exception."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from data_prep.fake import bad_case_bytes, jpeg_bytes
from data_prep.images import Encoded, Rejected, encode_image
from data_prep.photos import photo_like


@pytest.fixture(scope="module")
def rng() -> np.random.Generator:
    return np.random.default_rng(7)


def decoded(result: Encoded | Rejected) -> Image.Image:
    assert isinstance(result, Encoded), result
    image = Image.open(io.BytesIO(result.jpeg))
    assert image.format == "JPEG"
    return image


@pytest.mark.parametrize("case", ["cmyk", "grey", "png"])
def test_awkward_formats_become_rgb_jpegs(case: str, rng: np.random.Generator) -> None:
    data = bad_case_bytes(case, rng, (200, 150))
    image = decoded(encode_image(data))
    assert image.mode == "RGB"
    assert image.size == (256, 256)


def test_exif_orientation_is_honoured(rng: np.random.Generator) -> None:
    # stored 150 wide x 200 high with orientation 6: upright it is 200x150, so short256 gives 341x256
    data = bad_case_bytes("exif", rng, (200, 150))
    assert Image.open(io.BytesIO(data)).size == (150, 200)
    result = encode_image(data, resize="short256")
    assert decoded(result).size == (341, 256)
    assert result.source_size == (150, 200)


def test_exif_rotation_puts_pixels_upright() -> None:
    pixels = np.zeros((100, 200, 3), dtype=np.uint8)
    pixels[:, :100] = 255  # upright: white left half, black right half
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    Image.fromarray(pixels).transpose(Image.Transpose.ROTATE_90).save(buffer, "JPEG", exif=exif.tobytes())
    out = np.asarray(decoded(encode_image(buffer.getvalue(), resize="short256")))
    assert out[:, :200].mean() > 200 and out[:, -200:].mean() < 50


@pytest.mark.parametrize(
    ("case", "reason"),
    [("truncated", "truncated"), ("empty", "empty file"), ("notimage", "not an image"), ("bomb", "bomb")],
)
def test_broken_inputs_are_rejected_with_a_reason(case: str, reason: str, rng: np.random.Generator) -> None:
    result = encode_image(bad_case_bytes(case, rng, (200, 150)))
    assert isinstance(result, Rejected)
    assert reason in result.reason


def test_pixel_limit_is_a_setting(rng: np.random.Generator) -> None:
    data = jpeg_bytes(photo_like(rng, 200, 150))
    assert isinstance(encode_image(data, max_pixels=200 * 150), Encoded)
    rejected = encode_image(data, max_pixels=200 * 150 - 1)
    assert isinstance(rejected, Rejected) and "bomb" in rejected.reason


def test_resize_modes(rng: np.random.Generator) -> None:
    data = jpeg_bytes(photo_like(rng, 500, 375))
    assert decoded(encode_image(data, resize="paper")).size == (256, 256)
    assert decoded(encode_image(data, resize="short256")).size == (341, 256)
    kept = encode_image(data, resize="none")
    assert isinstance(kept, Encoded) and kept.jpeg == data  # true raw JPEG: the source bytes


def test_resize_none_still_converts_cmyk(rng: np.random.Generator) -> None:
    data = bad_case_bytes("cmyk", rng, (120, 90))
    result = encode_image(data, resize="none")
    assert decoded(result).mode == "RGB" and decoded(result).size == (120, 90)


def test_dct_scaled_decode_matches_full_decode(rng: np.random.Generator) -> None:
    """A 1200x900 source decodes at 1/2 scale (DCT) before resizing; the result stays close to full decode."""
    data = jpeg_bytes(photo_like(rng, 1200, 900))
    fast = np.asarray(decoded(encode_image(data)), dtype=np.float32)
    full = Image.open(io.BytesIO(data)).convert("RGB").resize((341, 256), Image.Resampling.LANCZOS)
    reference = np.asarray(full.crop((42, 0, 298, 256)), dtype=np.float32)
    assert np.abs(fast - reference).mean() < 6.0


def test_pixels_returned_for_statistics(rng: np.random.Generator) -> None:
    result = encode_image(jpeg_bytes(photo_like(rng, 160, 120)), want_pixels=True)
    assert isinstance(result, Encoded)
    assert (
        result.pixels is not None and result.pixels.shape == (256, 256, 3) and result.pixels.dtype == np.uint8
    )
