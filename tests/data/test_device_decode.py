"""data.decode=device against data.decode=workers: the same samples, crops and flips for the same seed, the
same pixels where the decoder is the same library (the CPU here), the same DDP split, the same RNG use."""

from __future__ import annotations

import io
import shutil
import tarfile
from itertools import islice
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from data_prep.prep import run_prep
from pipeline.data import ShardDataModule
from pipeline.data.device_decode import DeviceDecode, JpegBatch, jpeg_size
from tests.helpers.label_recorder import LabelRecorder, fit_recorder

CROP = 56  # crops of the data fixtures' 64x64 images (conftest.py)
BATCH = 4


def _module(root, decode: str, rank: int = 0, world: int = 1, **kwargs) -> ShardDataModule:
    defaults = {"batch_size": BATCH, "num_workers": 0, "crop_size": CROP, "full_size": 64}
    defaults["shuffle_buffer"] = 16
    dm = ShardDataModule(root, decode=decode, **defaults | kwargs)
    dm.set_distributed(rank, world)
    return dm


def _epoch(
    dm: ShardDataModule, seed: int = 0, loader=None, limit: int | None = None
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch (or its first ``limit`` batches) of uint8 batches as training sees them (device path: decoded
    in this process)."""
    torch.manual_seed(seed)  # the DataLoader draws its workers' base seed from here, when iter() starts it
    batches = []
    for batch in islice(loader if loader is not None else dm.train_dataloader(), limit):
        if isinstance(batch, JpegBatch):
            batch = dm.device_decode(dm.transfer_batch_to_device(batch, torch.device("cpu"), 0))
        batches.append(batch)
    return batches


def _assert_same_batches(workers, device) -> None:
    assert len(workers) == len(device) > 0
    for (images_w, labels_w), (images_d, labels_d) in zip(workers, device, strict=True):
        assert torch.equal(labels_w, labels_d)
        assert images_d.dtype == torch.uint8 and images_d.shape == images_w.shape
        assert images_d.is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(images_w, images_d)  # the same decoder: bit for bit, so the same crops and flips


def test_jpeg_size_reads_the_frame_header_of_every_kind_of_jpeg():
    rng = np.random.default_rng(0)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: the frame header still holds the stored size
    pixels = rng.integers(0, 255, (37, 53, 3), dtype=np.uint8)
    variants = {
        "baseline": {},
        "progressive": {"progressive": True},
        "optimized, 4:4:4": {"optimize": True, "subsampling": 0},
        "restart markers, exif": {"exif": exif, "restart_marker_blocks": 1},
    }
    for name, options in variants.items():
        out = io.BytesIO()
        Image.fromarray(pixels).save(out, format="JPEG", quality=80, **options)
        assert jpeg_size(out.getvalue()) == (37, 53), name
    grey = io.BytesIO()
    Image.fromarray(pixels[..., 0]).save(grey, format="JPEG")
    assert jpeg_size(grey.getvalue()) == (37, 53)
    for bad in (b"", b"\xff\xd8", b"\xff\xd8 not a jpeg at all", b"\x89PNG\r\n", grey.getvalue()[:20]):
        with pytest.raises(ValueError):
            jpeg_size(bad)


def _demo_batches(demo_shards, decode: str, batches: int | None, **settings):
    dm = ShardDataModule(demo_shards, crop_size=227, decode=decode, **settings)
    loader = dm.train_dataloader()
    out = _epoch(dm, seed=3, loader=loader, limit=batches)
    return out, len(loader)


def test_the_first_demo_batches_are_the_same_in_both_paths(demo_shards):
    """Real 256-px shards, the paper's 227 crops, shuffle buffer, two workers: same labels, crops, pixels."""
    settings = {"batch_size": 16, "num_workers": 2, "shuffle_buffer": 200}
    workers, _ = _demo_batches(demo_shards, "workers", 4, **settings)
    device, _ = _demo_batches(demo_shards, "device", 4, **settings)
    _assert_same_batches(workers, device)


@pytest.mark.slow
def test_an_epoch_of_the_demo_is_the_same_in_both_paths(demo_shards):
    settings = {"batch_size": 64, "num_workers": 2}
    workers, length = _demo_batches(demo_shards, "workers", None, **settings)
    device, _ = _demo_batches(demo_shards, "device", None, **settings)
    assert len(workers) == length == ShardDataModule(demo_shards).manifest.split("train").samples // 64
    _assert_same_batches(workers, device)


def test_one_gather_and_per_image_copies_crop_the_same(demo_shards):
    dm = ShardDataModule(demo_shards, batch_size=32, num_workers=0, crop_size=227, decode="device")
    torch.manual_seed(0)
    batch = next(iter(dm.train_dataloader()))
    assert batch.crops[:, 2].unique().tolist() == [0, 1]  # both flips occur
    rows, labels = DeviceDecode(227, gather=False)(batch)
    gathered, same_labels = DeviceDecode(227, gather=True)(batch)
    assert torch.equal(rows, gathered) and torch.equal(labels, same_labels)
    assert gathered.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("fixture", ["uneven_shards", "few_shards"])
def test_ranks_of_a_ddp_job_get_the_same_samples_in_both_paths(request, fixture):
    root = request.getfixturevalue(fixture)
    seen = []
    for rank in (0, 1):
        workers = _epoch(_module(root, "workers", rank=rank, world=2, num_workers=2))
        device = _epoch(_module(root, "device", rank=rank, world=2, num_workers=2))
        _assert_same_batches(workers, device)
        seen += [label for _, labels in device for label in labels.tolist()]
    assert len(seen) == len(set(seen))  # no sample on two ranks


def test_both_paths_use_the_rng_identically_so_a_resumed_stream_resumes_both(uneven_shards):
    """Without workers the transforms draw from this process's RNG: after an epoch (and in the next one) both
    paths leave it in the same state. Any stream-level resume (shard position, shuffle buffer, RNG states)
    therefore restores the device path exactly as the worker path; the loader's own state_dict, where it
    exists, is the same object in both paths (TrainStream with another transform and collate)."""
    states, batches = {}, {}
    for decode in ("workers", "device"):
        dm = _module(uneven_shards, decode)
        loader = dm.train_dataloader()
        batches[decode] = _epoch(dm, seed=5, loader=loader) + _epoch(dm, seed=6, loader=loader)
        states[decode] = torch.get_rng_state()
        assert type(dm._train).__name__ == "TrainStream"
    assert torch.equal(states["workers"], states["device"])
    _assert_same_batches(batches["workers"], batches["device"])


def test_a_sample_with_a_bad_header_is_skipped_by_the_worker_in_both_paths(corrupt_shards):
    workers = _epoch(_module(corrupt_shards, "workers"))
    dm = _module(corrupt_shards, "device")
    device = _epoch(dm)
    _assert_same_batches(workers, device)
    assert 9 not in torch.cat([labels for _, labels in device]).tolist()
    assert dm.corrupt_samples == 1


def test_an_image_that_does_not_decode_is_dropped_from_its_batch(shard_factory, tmp_path, caplog):
    """A JPEG with a sound header but truncated data passes the worker, which never decodes: the device drops
    it from its batch and counts it; the other images of the batch arrive intact."""
    root = Path(shutil.copytree(shard_factory("truncated", train=[8], val=[4]), tmp_path / "shards"))
    shard = root / "train" / "train-000000.tar"
    with tarfile.open(shard) as tar:
        members = [(member, tar.extractfile(member).read()) for member in tar.getmembers()]
    with tarfile.open(shard, "w", format=tarfile.USTAR_FORMAT) as tar:
        for member, data in members:
            if member.name == "img00005.jpg":
                data = data[: len(data) // 2]
                member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    dm = _module(root, "device", verify="off")  # the shard was rewritten: only the decoders are under test
    device = _epoch(dm)
    workers = _epoch(_module(root, "workers", verify="off"))
    assert sorted(len(labels) for _, labels in device) == [3, 4]  # one batch is one image short
    assert sorted(torch.cat([labels for _, labels in device]).tolist()) == [0, 1, 2, 3, 4, 6, 7]
    assert 5 not in torch.cat([labels for _, labels in workers]).tolist()
    assert dm.corrupt_samples == 1 and "does not decode" in caplog.text
    for images_d, labels_d in device:
        assert images_d.shape[0] == labels_d.shape[0]


def test_a_wrong_decode_setting_is_a_one_line_error(uneven_shards):
    with pytest.raises(ValueError, match="data.decode must be one of workers, device"):
        ShardDataModule(uneven_shards, crop_size=CROP, decode="gpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_nvjpeg_gives_the_workers_batches_within_decoder_tolerance(demo_shards):
    dm = ShardDataModule(demo_shards, batch_size=64, num_workers=2, crop_size=227, decode="device")
    workers = _epoch(ShardDataModule(demo_shards, batch_size=64, num_workers=2, crop_size=227), seed=1)
    torch.manual_seed(1)
    for (images_w, labels_w), batch in zip(workers, dm.train_dataloader(), strict=True):
        images, labels = dm.device_decode(dm.transfer_batch_to_device(batch, torch.device("cuda"), 0))
        assert torch.equal(labels.cpu(), labels_w)
        difference = (images.cpu().float() - images_w.float()).abs()
        assert difference.mean() < 1.5 and difference.max() <= 64  # IDCT and chroma upsampling differ


@pytest.fixture(scope="module", params=["none", "short256"])
def unresized_shards(request, fake_imagenet, tmp_path_factory) -> Path:
    """The fake ImageNet (160x120 and 120x160 photos) prepared without the paper's resize."""
    out = tmp_path_factory.mktemp(f"resize-{request.param}")
    run_prep(fake_imagenet, out, workers=1, resize=request.param, shard_samples=10, progress=False)
    return out


@pytest.mark.parametrize("decode", ["workers", "device"])
def test_shards_not_resized_in_prep_train_at_the_papers_size(unresized_shards, decode):
    """A prep with resize=none (or short256) trains as it is: each image is brought to 256x256 (short side,
    centre square) at load time, so 227 crops fit images of 160x120; validation sees 227 and 256 squares."""
    dm = ShardDataModule(unresized_shards, batch_size=4, num_workers=0, crop_size=227, decode=decode)
    assert dm.load_size == 256
    for images, _ in _epoch(dm):
        assert images.shape == (4, 3, 227, 227)
    for crop, side in (("center", 227), ("full", 256)):
        images, _ = next(iter(dm.eval_dataloader(crop=crop)))
        assert images.shape[1:] == (3, side, side)


def test_load_time_resize_is_the_same_in_both_paths_and_matches_a_plain_resize(unresized_shards):
    workers = _epoch(ShardDataModule(unresized_shards, batch_size=4, num_workers=0, crop_size=227))
    dm = ShardDataModule(unresized_shards, batch_size=4, num_workers=0, crop_size=227, decode="device")
    _assert_same_batches(workers, _epoch(dm))
    # the full 256 image against an independent resize of the decoded image's centre square (float, rounded)
    sample = next(iter(dm.eval_dataloader(crop="full")))[0][0]
    first = ShardDataModule(unresized_shards, crop_size=227).manifest.shard_paths("val")[0]
    with tarfile.open(first) as tar:
        jpeg = next(tar.extractfile(m).read() for m in tar.getmembers() if m.name.endswith(".jpg"))
    pixels = torch.from_numpy(np.array(Image.open(io.BytesIO(jpeg)).convert("RGB"))).permute(2, 0, 1)
    height, width = pixels.shape[1:]
    side = min(height, width)
    square = pixels[:, (height - side) // 2 :, (width - side) // 2 :][:, :side, :side].float()
    reference = F.interpolate(square[None], size=(256, 256), mode="bilinear", antialias=True)[0]
    assert (sample.float() - reference.round().clamp(0, 255)).abs().mean() < 1.5  # PIL vs libjpeg-turbo


def test_a_lightning_fit_decodes_on_the_device_and_normalises_after(uneven_shards, tmp_path):
    """Under a Trainer the JPEG batch passes transfer_batch_to_device, on_after_batch_transfer decodes it: the
    module sees float batches, PCA lighting in training, exact mean subtraction in validation; the epochs'
    labels are those of the worker path for the trainer's epochs."""
    settings = {"batch_size": BATCH, "num_workers": 1, "crop_size": CROP, "shuffle_buffer": 16}
    dm = ShardDataModule(uneven_shards, decode="device", **settings)
    module = LabelRecorder(dm.num_classes)
    fit_recorder(tmp_path, module, dm)
    reference = ShardDataModule(uneven_shards, **settings | {"num_workers": 0}).train_dataloader()
    for epoch in (0, 1):
        train = [r for r in module.records if r["stage"] == "train" and r["epoch"] == epoch]
        assert len(train) == 58 // BATCH
        expected = {label for _, labels in reference for label in labels.tolist()}
        assert {label for r in train for label in r["labels"]} == expected
    assert {r["dtype"] for r in module.records} == {"torch.float32"}
    assert max(r["off_integer"] for r in module.records if r["stage"] == "val") < 1e-3
    assert max(r["off_integer"] for r in module.records if r["stage"] == "train") > 0.05
