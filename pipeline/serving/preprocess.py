"""The paper's test-time preprocessing for one image a user has: decode (any format PIL reads; CMYK, grey or
palette images become RGB), the centre square of the shorter side resized to 256x256 (as data_prep's
resize=paper stores the val images, so the net sees what it was tested on), then the centre crop or the
paper's 10 crops (four corners and the centre, each mirrored), with the training mean subtracted."""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision.transforms.v2.functional import center_crop, ten_crop

from pipeline.data.transforms import to_full_size

CROPS = ("center", "tencrop")


def to_uint8_chw(image: Any) -> torch.Tensor:
    """uint8 [3, H, W] from encoded bytes (or their base64 text, as JSON carries them) or a uint8 array
    [H, W, 3] / [H, W] (nested lists too). ValueError for anything else."""
    if isinstance(image, str):
        image = base64.b64decode(image)  # MLflow's base64 breaks lines every 76 characters
    if isinstance(image, (bytes, bytearray, memoryview)):
        try:
            with Image.open(io.BytesIO(bytes(image))) as opened:
                pixels = np.asarray(opened.convert("RGB"))
        except (OSError, Image.DecompressionBombError) as error:
            raise ValueError(f"not a readable image: {error}") from error
    else:
        pixels = np.asarray(image)
        if pixels.dtype != np.uint8:
            if pixels.dtype.kind not in "iu" or pixels.min() < 0 or pixels.max() > 255:
                raise ValueError(f"an image array must hold uint8 values 0-255 (got dtype {pixels.dtype})")
            pixels = pixels.astype(np.uint8)
        if pixels.ndim == 2:
            pixels = np.repeat(pixels[:, :, None], 3, axis=2)
        if pixels.ndim != 3 or pixels.shape[2] != 3:
            raise ValueError(f"an image array must be [H, W, 3] or [H, W] (got shape {pixels.shape})")
    return torch.tensor(pixels).permute(2, 0, 1)  # a copy: PIL's and callers' arrays may be read-only


def views(image: torch.Tensor, *, crop: int, full_size: int, crops: str, mean: torch.Tensor) -> torch.Tensor:
    """float32 [V, 3, crop, crop], V = 1 (centre) or 10 (the paper's crops, torchvision's ten_crop order)."""
    if crops not in CROPS:
        raise ValueError(f"crops must be one of {', '.join(CROPS)} (got {crops!r})")
    square = to_full_size(image, full_size)
    if crops == "center":
        stacked = center_crop(square, [crop, crop])[None]
    else:
        stacked = torch.stack(ten_crop(square, [crop, crop]))
    return stacked.float() - mean.view(1, 3, 1, 1)
