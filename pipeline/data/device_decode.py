"""``data.decode=device``: the DataLoader workers read JPEG bytes only; the training device decodes the batch.

Worker side (``TrainCropParams``, ``collate_jpegs``): per sample, the label, the JPEG bytes and the image size
from the JPEG's frame header (no decode), then the same three random ints ``TrainCrop`` draws, in the same
order, turned into the same crop offsets and flip. The sample stream, the shuffle buffer and the workers' RNG
are therefore consumed exactly as in ``data.decode=workers``: the same seed gives the same samples, crops and
flips, and anything that resumes the stream resumes both paths. A batch is one ``JpegBatch``: all its JPEG
bytes in one uint8 tensor (one shared-memory block through the worker pipe, not one per image), their
lengths, the labels and the crops.

Device side (``DeviceDecode``, called from ``ShardDataModule.on_after_batch_transfer``): one batched
``torchvision.io.decode_jpeg`` call, on nvJPEG on a CUDA device, libjpeg-turbo on the CPU (the workers'
decoder: bit-identical pixels, which the tests check), then the optional load-time resize to ``full`` x
``full``, the crop and the flip, into a channels-last uint8 batch as ``collate`` makes it. Normalisation and
PCA lighting follow unchanged.

Why torchvision's decoder and not DALI or TorchCodec (docs/cluster.md): it is already a pinned dependency,
the only one present both here and on a bare-torch GPU machine, and the same library as the workers (exact
pixels on the CPU). torchvision 0.29 deprecates it for TorchCodec (>= 0.16, same call); ``decode_jpegs`` is
the one function to switch, together with the workers' ``transforms._decode_jpeg_rgb`` so the two paths keep
one decoder.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torchvision.io import ImageReadMode, decode_jpeg

from data_prep.manifest import SAMPLE_IMAGE, SAMPLE_LABEL
from pipeline.data.transforms import (
    _TORCHCODEC_NOTICE,
    CorruptSampleError,
    check_size,
    to_full_size,
)

log = logging.getLogger("pipeline.data")

# Frame headers (SOFn) of every JPEG coding process; 0xC4 (DHT), 0xC8 (JPG) and 0xCC (DAC) are not frames.
_SOF_MARKERS = frozenset((0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF))
_STANDALONE_MARKERS = frozenset((0x01, *range(0xD0, 0xD8)))  # TEM, RST0-7: no length field


def jpeg_size(data: bytes) -> tuple[int, int]:
    """(height, width) from a JPEG's frame header, without decoding: a few us. ValueError if there is none."""
    if data[:2] != b"\xff\xd8":
        raise ValueError("not a JPEG (no SOI marker)")
    position, end = 2, len(data)
    while position + 4 <= end:
        if data[position] != 0xFF:
            raise ValueError(f"no JPEG marker at byte {position}")
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker in _STANDALONE_MARKERS:
            position += 2
            continue
        if marker in (0xD9, 0xDA):  # EOI or the first scan before any frame header
            break
        if marker in _SOF_MARKERS and position + 9 <= end:
            height = int.from_bytes(data[position + 5 : position + 7], "big")
            width = int.from_bytes(data[position + 7 : position + 9], "big")
            if height < 1 or width < 1:
                raise ValueError(f"JPEG frame header says {width}x{height}")
            return height, width
        position += 2 + int.from_bytes(data[position + 2 : position + 4], "big")
    raise ValueError("no JPEG frame header (SOF) before the image data")


Crop = tuple[int, int, int]  # top, left, flip (0/1)


class TrainCropParams:
    """Worker side of ``TrainCrop``: (JPEG bytes, label, (top, left, flip)) without decoding the image.

    ``full``: the side of the square the image is brought to at load time (shards prepared with
    resize=short256 or none); the crop offsets are then drawn in that frame, as ``TrainCrop`` draws them.
    """

    def __init__(self, size: int, *, full: int | None = None, num_classes: int | None = None) -> None:
        self.size = size
        self.full = full
        self.num_classes = num_classes

    def __call__(self, sample: dict[str, Any], draws: tuple[int, int, int]) -> tuple[bytes, int, Crop]:
        """``draws``: the sample's three random integers, exactly those ``TrainCrop`` gets."""
        key, url = str(sample.get("__key__")), str(sample.get("__url__"))
        try:
            if "__damaged__" in sample:
                raise ValueError(sample["__damaged__"])
            label = int(sample[SAMPLE_LABEL])
            if self.num_classes is not None and not 0 <= label < self.num_classes:
                raise ValueError(f"label {label} is not in [0, {self.num_classes})")
            data = bytes(sample[SAMPLE_IMAGE])
            height, width = jpeg_size(data)
        except (KeyError, ValueError, TypeError) as exc:
            raise CorruptSampleError(key, url, f"{type(exc).__name__}: {exc}") from exc
        if self.full is not None:
            height, width = self.full, self.full
        check_size(height, width, self.size, sample)
        top, left, flip = draws
        return data, label, (top % (height - self.size + 1), left % (width - self.size + 1), flip % 2)


class JpegBatch:
    """A batch of undecoded JPEGs: ``data`` (all bytes, uint8 [N]), ``lengths`` (int64 [B]), ``labels``
    (int64 [B]) and ``crops`` (int64 [B, 3]: top, left, flip). A plain class on purpose: Lightning and the
    DataLoader move and pin what they recognise, and the JPEG bytes must stay on the host, where the decoder
    reads them; ``to`` moves only the labels."""

    __slots__ = ("data", "lengths", "labels", "crops")

    def __init__(self, data: torch.Tensor, lengths: torch.Tensor, labels: torch.Tensor, crops: torch.Tensor):
        self.data, self.lengths, self.labels, self.crops = data, lengths, labels, crops

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def jpegs(self) -> list[torch.Tensor]:
        return list(self.data.split(self.lengths.tolist()))

    def to(self, device: torch.device | str) -> JpegBatch:
        labels = self.labels.to(device, non_blocking=True)
        return JpegBatch(self.data, self.lengths, labels, self.crops)

    def pin_memory(self) -> JpegBatch:  # the DataLoader's pin_memory thread calls this
        return JpegBatch(self.data, self.lengths, self.labels.pin_memory(), self.crops)


def collate_jpegs(samples: Sequence[tuple[bytes, int, Crop]]) -> JpegBatch:
    data = b"".join(sample[0] for sample in samples)
    return JpegBatch(
        torch.frombuffer(bytearray(data), dtype=torch.uint8),
        torch.tensor([len(sample[0]) for sample in samples], dtype=torch.int64),
        torch.tensor([sample[1] for sample in samples], dtype=torch.int64),
        torch.tensor([sample[2] for sample in samples], dtype=torch.int64).reshape(-1, 3),
    )


def decode_jpegs(jpegs: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    """RGB uint8 [3, H, W] per JPEG on ``device``: nvJPEG's batched decode on CUDA, else libjpeg-turbo."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_TORCHCODEC_NOTICE, category=DeprecationWarning)
        return decode_jpeg(jpegs, mode=ImageReadMode.RGB, device=device)


def crop_flip_rows(images: Sequence[torch.Tensor], crops: list[list[int]], size: int) -> torch.Tensor:
    """Crops and flips into a channels-last uint8 batch, one copy per image (as ``transforms.collate``)."""
    device = images[0].device
    shape = (len(images), 3, size, size)
    out = torch.empty(shape, dtype=torch.uint8, device=device, memory_format=torch.channels_last)
    for row, image, (top, left, flip) in zip(out, images, crops, strict=True):
        crop = image[:, top : top + size, left : left + size]
        row.copy_(crop.flip(-1) if flip else crop)
    return out


def crop_flip_gather(images: torch.Tensor, crops: torch.Tensor, size: int) -> torch.Tensor:
    """The same for images of one size stacked as [B, 3, H, W]: one gather kernel instead of B copies (on a
    GPU, B launches cost more than the copy). The result is channels-last, as ``crop_flip_rows``'s."""
    crops = crops.to(images.device)
    steps = torch.arange(size, device=images.device)
    rows = crops[:, 0, None] + steps  # [B, size]
    flip = crops[:, 2, None].bool()
    cols = crops[:, 1, None] + torch.where(flip, size - 1 - steps, steps)  # [B, size]
    batch = torch.arange(images.shape[0], device=images.device)[:, None, None]
    # advanced indices on dims 0, 2, 3 around the channel slice: the result is [B, size, size, 3]
    return images[batch, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


class DeviceDecode:
    """Device side: ``JpegBatch`` -> (uint8 [B, 3, size, size] channels-last, labels) on the labels' device.

    ``full``: bring each image to ``full`` x ``full`` first (short side, centre square), as the workers do for
    shards prepared without the paper's resize. ``gather``: crop with one gather kernel when the images share
    a size (None: on CUDA only; on the CPU per-image copies are faster). Both give the same pixels.

    A JPEG whose header reads but whose data does not decode (truncated, damaged) cannot be skipped in the
    worker, which never decodes: it is dropped from its batch here (that batch is one image short), logged
    and counted in ``skipped``. The worker path skips it in the worker instead. ``data_prep.verify`` decodes
    every image, so verified shards hold none.
    """

    def __init__(self, size: int, full: int | None = None, gather: bool | None = None) -> None:
        self.size = size
        self.full = full
        self.gather = gather
        self.skipped = 0

    def __call__(self, batch: JpegBatch) -> tuple[torch.Tensor, torch.Tensor]:
        device = batch.labels.device
        jpegs = batch.jpegs()
        labels, crops = batch.labels, batch.crops
        try:
            images = decode_jpegs(jpegs, device)
        except RuntimeError:  # one bad image fails the whole call: find it, drop it, keep the rest
            decoded = [self._decode_one(jpeg, device, index) for index, jpeg in enumerate(jpegs)]
            keep = [index for index, image in enumerate(decoded) if image is not None]
            if not keep:
                raise
            images = [decoded[index] for index in keep]
            labels, crops = labels[torch.tensor(keep, device=labels.device)], crops[keep]
        if self.full is not None:
            images = [to_full_size(image, self.full) for image in images]
        gather = device.type == "cuda" if self.gather is None else self.gather
        if gather and len({image.shape for image in images}) == 1:
            return crop_flip_gather(torch.stack(images), crops, self.size), labels
        return crop_flip_rows(images, crops.tolist(), self.size), labels

    def _decode_one(self, jpeg: torch.Tensor, device: torch.device, index: int) -> torch.Tensor | None:
        try:
            return decode_jpegs([jpeg], device)[0]
        except RuntimeError as exc:
            self.skipped += 1
            log.warning("skipped image %d of a batch: it does not decode (%s)", index, str(exc)[:200])
            return None
