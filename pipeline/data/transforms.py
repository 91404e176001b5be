"""Image transforms, split where they are cheapest.

Per sample, in the DataLoader workers, on uint8 tensors: JPEG decode, a random (train) or centre (eval) crop,
a horizontal flip. Per batch, once, on the training device: float conversion, the paper's PCA colour noise
(train only) and per-channel mean subtraction. Converting to float per sample costs ~0.45 ms/image on this
CPU (docs/benchmarks.md); per batch it is one vectorised op, and uint8 batches cross the worker pipe at a
quarter the bytes.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms.v2.functional import InterpolationMode, resize

from data_prep.manifest import SAMPLE_IMAGE, SAMPLE_LABEL

# torchvision 0.29 warns on *every* decode_jpeg call that TorchCodec will supersede its image codecs. We keep
# torchvision's libjpeg-turbo decoder (a pinned dependency, as fast as any CPU decoder for 256-px JPEGs;
# TorchCodec would add a dependency for no gain) and silence exactly that message around exactly our call: a
# module-level filter would change the whole process's filters and is undone by anything that resets them
# (pytest does).
_TORCHCODEC_NOTICE = r"The image decoding and encoding capabilities of TorchVision are deprecated"


def _decode_jpeg_rgb(data: torch.Tensor) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_TORCHCODEC_NOTICE, category=DeprecationWarning)
        return decode_jpeg(data, mode=ImageReadMode.RGB)


class CorruptSampleError(ValueError):
    """A sample that cannot be decoded (bad JPEG, missing field, non-integer label): skip it, count it."""

    def __init__(self, key: str, url: str, reason: str) -> None:
        super().__init__(f"corrupt sample {key!r} in {url}: {reason}")
        self.key = key
        self.url = url


# A damaged JPEG header can claim any size up to 65,535 x 65,535 (13 GB decoded): refuse more pixels than
# this before decoding (PIL's decompression-bomb limit; data_prep rejects such sources too).
MAX_DECODE_PIXELS = 89_478_485
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # start-of-frame: holds height and width


def jpeg_pixels(data: bytes) -> int | None:
    """Height x width from the JPEG's start-of-frame header, without decoding; None if none is found."""
    position = 2
    while position + 9 <= len(data) and data[position] == 0xFF:
        marker = data[position + 1]
        if marker in _SOF_MARKERS:
            return int.from_bytes(data[position + 5 : position + 7]) * int.from_bytes(
                data[position + 7 : position + 9]
            )
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        position += 2 + int.from_bytes(data[position + 2 : position + 4])
    return None


def decode_sample(sample: dict[str, Any], num_classes: int | None = None) -> tuple[torch.Tensor, int]:
    """WebDataset sample (JPEG bytes, class index text) -> (uint8 RGB [3, H, W], class index).

    Any damage is a CorruptSampleError (skipped and counted by the loader): a missing field, a label that is
    not an integer in [0, ``num_classes``), a marker the shard reader set (``__damaged__``), bytes that do not
    decode, or a header claiming more than MAX_DECODE_PIXELS."""
    key, url = str(sample.get("__key__")), str(sample.get("__url__"))
    try:
        if "__damaged__" in sample:
            raise ValueError(sample["__damaged__"])
        label = int(sample[SAMPLE_LABEL])
        if label < 0 or (num_classes is not None and label >= num_classes):
            raise ValueError(f"label {label} is not a class index in [0, {num_classes})")
        jpeg = sample[SAMPLE_IMAGE]
        pixels = jpeg_pixels(jpeg)
        if pixels is not None and pixels > MAX_DECODE_PIXELS:
            raise ValueError(f"its header claims {pixels} pixels, more than {MAX_DECODE_PIXELS}")
        # bytearray: torch.frombuffer warns on read-only buffers (bytes); the ~100 KB copy is negligible.
        image = _decode_jpeg_rgb(torch.frombuffer(bytearray(jpeg), dtype=torch.uint8))
    except (KeyError, ValueError, TypeError, RuntimeError) as exc:
        raise CorruptSampleError(key, url, f"{type(exc).__name__}: {exc}") from exc
    return image, label


def check_size(height: int, width: int, size: int, sample: dict[str, Any]) -> None:
    # A configuration error, not a corrupt sample: raise a ValueError the skip handler does not swallow.
    if height < size or width < size:
        raise ValueError(
            f"image {sample.get('__key__')!r} in {sample.get('__url__')} is {width}x{height}, smaller "
            f"than the crop {size}; set data.crop_size <= {min(height, width)} or re-prep at a larger size"
        )


def to_full_size(image: torch.Tensor, full: int) -> torch.Tensor:
    """The paper's 256x256 at load time, for shards prepared with resize=short256 or none: the centre square
    of the shorter side, resized to ``full`` x ``full`` (antialiased bilinear, as data_prep's resize=paper)
    unless it already is that size. Any device; on the CPU the uint8 SIMD kernel (channels-last memory)."""
    height, width = image.shape[-2:]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = image[:, top : top + side, left : left + side]
    if side == full:
        return square
    dense = square.permute(1, 2, 0).contiguous().permute(2, 0, 1)  # channels-last memory: the fast kernel
    return resize(dense, [full, full], interpolation=InterpolationMode.BILINEAR, antialias=True)


_MASK64 = (1 << 64) - 1


def _splitmix64(value: int) -> int:
    """SplitMix64's output function: a well-mixed 64-bit hash of a 64-bit counter (Steele et al. 2014)."""
    value = (value + 0x9E3779B97F4A7C15) & _MASK64
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _MASK64
    return value ^ (value >> 31)


def stream_seed(*parts: int) -> int:
    """One 64-bit seed from integers (data seed, epoch, rank, worker): the same in every process."""
    seed = 0
    for part in parts:
        seed = _splitmix64(seed ^ (part & _MASK64))
    return seed


def sample_draws(seed: int, index: int) -> tuple[int, int, int]:
    """Three random 30-bit integers for the ``index``-th sample of the stream ``seed``: a pure function of
    both, so a crop does not depend on what the worker drew before (a resumed stream draws the same)."""
    first, second = _splitmix64(seed + 2 * index), _splitmix64(seed + 2 * index + 1)
    return first >> 34, second >> 34, (first >> 3) & ((1 << 30) - 1)


class TrainCrop:
    """Decode, random ``size`` crop, random horizontal flip (p=0.5); uint8 in, uint8 out.

    Plain tensor slicing, not transforms v2: v2's dispatch costs ~150 us/image here against ~25 us, a sixth
    of a 256-px JPEG decode. The crop is a view (or its flipped copy); ``collate`` copies it into the batch.
    ``full``: first bring the image to ``full`` x ``full`` (``to_full_size``, for shards not resized in prep).
    ``device_decode.TrainCropParams`` draws the same crops without decoding: keep the two in step.
    """

    def __init__(self, size: int, *, full: int | None = None, num_classes: int | None = None) -> None:
        self.size = size
        self.full = full
        self.num_classes = num_classes

    def __call__(self, sample: dict[str, Any], draws: tuple[int, int, int]) -> tuple[torch.Tensor, int]:
        """``draws``: three random integers (``sample_draws``) that pick the crop's corner and the flip."""
        image, label = decode_sample(sample, self.num_classes)
        if self.full is not None:
            image = to_full_size(image, self.full)
        height, width = image.shape[-2:]
        check_size(height, width, self.size, sample)
        top, left, flip = draws
        top, left = top % (height - self.size + 1), left % (width - self.size + 1)
        crop = image[:, top : top + self.size, left : left + self.size]
        if flip % 2:  # flip in the decoder's HWC memory, so the copy stays HWC and collate's copy a memcpy
            crop = crop.permute(1, 2, 0).flip(1).permute(2, 0, 1)
        return crop, label


class CenterCrop:
    """Decode and take the centre ``size`` crop: single-crop evaluation, or the whole stored image.
    ``full``: as ``TrainCrop``'s."""

    def __init__(self, size: int, *, full: int | None = None, num_classes: int | None = None) -> None:
        self.size = size
        self.full = full
        self.num_classes = num_classes

    def __call__(self, sample: dict[str, Any]) -> tuple[torch.Tensor, int]:
        image, label = decode_sample(sample, self.num_classes)
        if self.full is not None:
            image = to_full_size(image, self.full)
        height, width = image.shape[-2:]
        check_size(height, width, self.size, sample)
        top, left = (height - self.size) // 2, (width - self.size) // 2
        return image[:, top : top + self.size, left : left + self.size], label


def collate(samples: list[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8 [B, 3, H, W] in channels-last memory, int64 [B]).

    decode_jpeg returns [3, H, W] views of HWC memory; copying a crop into a channels-last batch is a row
    memcpy (~5 us/image), into a contiguous NCHW batch a transposing copy (~150 us). ``to_model_input`` makes
    the one transposition later, fused into the float conversion (on the GPU when training on one).
    """
    shape = (len(samples), *samples[0][0].shape)
    images = torch.empty(shape, dtype=torch.uint8, memory_format=torch.channels_last)
    for row, (image, _) in zip(images, samples, strict=True):
        row.copy_(image)
    labels = torch.tensor([label for _, label in samples], dtype=torch.int64)
    return images, labels


PCA_STREAM = 0x50434131  # "PCA1": keeps the lighting draws apart from the crop streams of the same seed


def pca_lighting_generator(seed: int, step: int, rank: int) -> torch.Generator:
    """The generator of one batch's PCA lighting draws: a pure function of (data seed, step, rank).

    Not the global RNG: dropout draws from that, so an arm without dropout (or without lighting) would shift
    every later draw of the other, and two arms of one seed would no longer see the same noise (common
    random numbers); nor would a resumed job without the RNG state."""
    return torch.Generator().manual_seed(stream_seed(PCA_STREAM, seed, step, rank))


def pca_lighting_shift(
    batch_size: int,
    eigenvalues: torch.Tensor,
    eigenvectors: torch.Tensor,
    sigma: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The paper's colour noise, one RGB offset per image: Σᵢ αᵢ λᵢ pᵢ with αᵢ ~ N(0, sigma) drawn per image.

    ``eigenvectors`` holds one eigenvector pᵢ per row. Returns [B, 3] in the units of ``eigenvalues``; its
    covariance is Pᵀ diag((sigma λ)²) P. The α are drawn on the CPU from ``generator`` (default: the global
    RNG), the same numbers whatever device trains.
    """
    alpha = torch.randn(batch_size, 3, generator=generator, dtype=eigenvalues.dtype)
    alpha = alpha.to(eigenvalues.device) * sigma
    return (alpha * eigenvalues) @ eigenvectors


def to_model_input(
    images: torch.Tensor, mean: torch.Tensor, shift: torch.Tensor | None = None
) -> torch.Tensor:
    """uint8 [B, 3, H, W] -> float32, ``mean`` [3] subtracted, an optional per-image offset [B, 3] added."""
    offset = -mean.to(images.device, torch.float32).expand(images.shape[0], 3)
    if shift is not None:
        offset = offset + shift.to(images.device, torch.float32)
    inputs = images.to(torch.float32, memory_format=torch.contiguous_format)
    return inputs.add_(offset[:, :, None, None])
