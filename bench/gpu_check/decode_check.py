"""Step ``decode``: ``data.decode=device`` pixels against the CPU decoder the workers use (libjpeg-turbo).

On CUDA the device path decodes with nvJPEG; the two decoders may differ by IDCT rounding (the JPEG standard
allows +-1 per pixel) and by how they upsample subsampled chroma (edges of colour regions). Bound: mean
absolute difference <= 1 level (of 255) and at most 1% of the values off by more than 4 levels, per kind of
JPEG; the largest difference is reported, not bounded. On the CPU both sides are libjpeg-turbo: equal.

Kinds: 4:2:0 baseline at quality 90 (what data_prep writes), 4:4:4 at 95 and progressive (``resize=none``
keeps a source's RGB JPEG bytes as they are), at the paper's 256x256 and at odd sizes; greyscale (decoded to
RGB) is reported but not required: shards never hold one (data_prep re-encodes them as RGB). Then a whole
``JpegBatch`` through ``DeviceDecode`` (decode, crop, flip: the gather kernel on CUDA) against the same batch
decoded and cropped on the CPU.
"""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

from bench.gpu_check.common import Context, StepResult, verdict
from pipeline.data.device_decode import DeviceDecode, collate_jpegs, decode_jpegs

MEAN_BOUND, OFF_BY, OFF_SHARE = 1.0, 4, 0.01
KINDS = {  # name: (PIL save options, mode)
    "420_q90": ({"quality": 90}, "RGB"),
    "444_q95": ({"quality": 95, "subsampling": 0}, "RGB"),
    "progressive_q90": ({"quality": 90, "progressive": True}, "RGB"),
    "grey_q90": ({"quality": 90}, "L"),
}
NOT_REQUIRED = {"grey_q90"}  # reported only: no shard holds a greyscale JPEG


def photo(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Smooth colour fields, hard edges and fine noise: what chroma subsampling and the IDCT are tested by."""
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    channels = [np.sin(x * rng.uniform(2, 9) + y * rng.uniform(2, 9) + rng.uniform(0, 6)) for _ in range(3)]
    image = (np.stack(channels, -1) * 80 + 128 + rng.normal(0, 12, (height, width, 3))).clip(0, 255)
    blocks = rng.integers(0, 2, (height // 32 + 1, width // 32 + 1, 1)).repeat(32, 0).repeat(32, 1)
    image[blocks[:height, :width, 0] == 1] *= 0.5  # hard edges between regions of different colour
    return image.astype(np.uint8)


def encode(pixels: np.ndarray, options: dict, mode: str) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(out, format="JPEG", **options)
    return out.getvalue()


def difference(a: torch.Tensor, b: torch.Tensor) -> dict[str, float]:
    diff = (a.cpu().int() - b.cpu().int()).abs()
    return {
        "mean_abs": float(diff.float().mean()),
        "share_off_by_more_than_4": float((diff > OFF_BY).float().mean()),
        "max_abs": int(diff.max()),
    }


def within(stats: dict[str, float]) -> bool:
    return stats["mean_abs"] <= MEAN_BOUND and stats["share_off_by_more_than_4"] <= OFF_SHARE


def _jpegs(rng: np.random.Generator, count: int) -> dict[str, list[bytes]]:
    sizes = [(256, 256), (375, 500), (211, 333)]
    return {
        kind: [encode(photo(rng, *sizes[i % len(sizes)]), options, mode) for i in range(count)]
        for kind, (options, mode) in KINDS.items()
    }


def _as_tensors(data: list[bytes]) -> list[torch.Tensor]:
    return [torch.frombuffer(bytearray(jpeg), dtype=torch.uint8) for jpeg in data]


def _batch_check(ctx: Context, data: list[bytes], rng: np.random.Generator) -> dict[str, float]:
    """A JpegBatch of 256x256 JPEGs with random crops and flips through DeviceDecode, device vs CPU."""
    crops = [(int(rng.integers(0, 30)), int(rng.integers(0, 30)), i % 2) for i in range(len(data))]
    batch = collate_jpegs([(jpeg, i, crop) for i, (jpeg, crop) in enumerate(zip(data, crops, strict=True))])
    on_device, labels = DeviceDecode(227)(batch.to(ctx.device))
    on_cpu, _ = DeviceDecode(227)(batch)
    stats = difference(on_device, on_cpu)
    stats["shape_ok"] = float(tuple(on_device.shape) == (len(data), 3, 227, 227))
    stats["channels_last"] = float(on_device.is_contiguous(memory_format=torch.channels_last))
    stats["labels_ok"] = float(labels.cpu().tolist() == list(range(len(data))))
    return stats


def run(ctx: Context) -> StepResult:
    rng = np.random.default_rng(0)
    count = 1 if ctx.quick else 12
    cases, checks, informational = {}, {}, {}
    for kind, data in _jpegs(rng, count).items():
        tensors = _as_tensors(data)
        try:
            on_device = decode_jpegs(tensors, ctx.device)
        except RuntimeError as exc:  # one kind the decoder refuses must not hide the others' results
            cases[kind] = {"error": str(exc)[:500]}
            (informational if kind in NOT_REQUIRED else checks)[f"{kind}: decodes"] = False
            continue
        on_cpu = decode_jpegs(tensors, torch.device("cpu"))
        per_image = [difference(a, b) for a, b in zip(on_device, on_cpu, strict=True)]
        shapes_equal = all(a.shape == b.shape for a, b in zip(on_device, on_cpu, strict=True))
        worst = {key: max(stats[key] for stats in per_image) for key in per_image[0]}
        cases[kind] = {"images": len(data), "worst_image": worst, "shapes_equal": shapes_equal}
        held = informational if kind in NOT_REQUIRED else checks
        held[f"{kind}: shapes equal, mean <= {MEAN_BOUND}, <= {OFF_SHARE:.0%} off by > {OFF_BY}"] = (
            shapes_equal and within(worst)
        )
    square = [encode(photo(rng, 256, 256), KINDS["420_q90"][0], "RGB") for _ in range(4 if ctx.quick else 64)]
    batch = cases["DeviceDecode batch (crop + flip)"] = _batch_check(ctx, square, rng)
    checks["DeviceDecode batch: shape, channels_last, labels, pixels within the bound"] = batch[
        "shape_ok"
    ] == batch["channels_last"] == batch["labels_ok"] == 1.0 and within(batch)
    decoder = "nvJPEG (torchvision) vs libjpeg-turbo" if ctx.cuda else "libjpeg-turbo on both sides (CPU)"
    details = {"decoder": decoder, "cases": cases, "checks": checks, "not_required": informational}
    return StepResult(verdict(checks), details)
