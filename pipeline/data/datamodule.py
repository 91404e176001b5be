"""The LightningDataModule over a data_prep output directory (``manifest.json`` + ``train/`` + ``val/``)."""

from __future__ import annotations

import atexit
import multiprocessing
import os
import signal
import sys
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from lightning.fabric.utilities.seed import pl_worker_init_function
from torch.utils.data import DataLoader

from data_prep.manifest import MANIFEST_NAME, Manifest, load_manifest
from pipeline.data.device_decode import DeviceDecode, JpegBatch, TrainCropParams, collate_jpegs
from pipeline.data.shard_checks import ShardChecks
from pipeline.data.streams import EpochDataLoader, EvalStream, TrainStream
from pipeline.data.transforms import (
    CenterCrop,
    TrainCrop,
    collate,
    pca_lighting_generator,
    pca_lighting_shift,
    to_model_input,
)

PIXEL_MAX = 255.0
DECODE_PATHS = ("workers", "device")


def _kill_workers_at_exit() -> None:
    """Python's exit stops daemonic children with SIGTERM, which the loader workers ignore, then joins them:
    a job that fails with workers alive would wait forever. Registered after multiprocessing's exit hook, this
    runs before it and SIGKILLs them (they only read shards); torch's SIGCHLD check would call it a crash."""
    children = [child for child in multiprocessing.active_children() if child.daemon]
    if not children:
        return
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    for child in children:
        child.kill()
    for child in children:
        child.join(timeout=5)


_EXIT_HOOK: list[bool] = []


def _register_exit_hook() -> None:
    if not _EXIT_HOOK:
        atexit.register(_kill_workers_at_exit)
        _EXIT_HOOK.append(True)


def ignore_sigterm_in_worker(worker_id: int) -> None:
    """Slurm SIGTERMs every process of a job it requeues or preempts. The training process then stops at the
    next batch boundary and checkpoints; a worker that died of the signal first would fail that batch instead
    ("DataLoader worker ... killed by signal: Terminated"). Workers exit with their parent anyway."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if int(os.environ.get("PL_SEED_WORKERS", "0")):  # Lightning adds this only where no worker_init_fn is set
        pl_worker_init_function(worker_id)


class ShardDataModule(L.LightningDataModule):
    """Train/val loaders over WebDataset shards; batches are (uint8 [B, 3, crop, crop], int64 [B]).

    ``on_after_batch_transfer`` turns them, once per batch on the device, into float32 with the manifest's
    per-channel mean subtracted (the paper: no std division) plus, in training, the paper's PCA colour noise
    with standard deviation ``pca_lighting`` (0 = off). Rank and world size come from the trainer in
    ``setup()`` (or ``set_distributed``); ``batch_size`` is per rank: the global batch is world x batch_size.

    PCA lighting scale: the manifest's eigenvalues λ are of the RGB covariance in 0-255 units (pixel²), and
    the paper's Σ αᵢλᵢpᵢ is not scale-free. We apply it at the [0, 1] intensity scale that reimplementations
    use (e.g. fb.resnet.torch's Lighting(0.1, eigval, eigvec)): λ' = λ/255², offset 255·Σ αᵢλ'ᵢpᵢ =
    Σ αᵢ(λᵢ/255)pᵢ grey levels, a few levels per image. Added raw, λ in pixel² would shift colours by
    hundreds of levels.

    ``decode="device"``: the train workers only read JPEG bytes and draw the crops; the batch is decoded,
    cropped and flipped in ``on_after_batch_transfer`` on the training device (``device_decode``), with the
    same samples, crops and flips as ``decode="workers"``. Evaluation always decodes in the workers.
    ``verify``: what a shard whose bytes differ from the manifest's sha256 does (``shard_checks``): skip |
    fail | off.
    Shards whose manifest says they were not resized as the paper did (resize=short256 or none) are brought
    to ``full_size`` x ``full_size`` at load time, in either path.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        batch_size: int = 128,
        num_workers: int = 4,
        crop_size: int = 227,
        shuffle_buffer: int = 2000,
        pca_lighting: float = 0.1,
        mean_subtraction: bool = True,
        seed: int = 0,
        val_batch_size: int | None = None,
        full_size: int = 256,
        pin_memory: bool | None = None,
        persistent_workers: bool = False,
        multiprocessing_context: str | None = None,
        decode: str = "workers",
        verify: str = "skip",
    ) -> None:
        super().__init__()
        for name, value in (("batch_size", batch_size), ("crop_size", crop_size), ("full_size", full_size)):
            if value < 1:
                raise ValueError(f"data.{name} must be >= 1 (got {value})")
        if num_workers < 0 or shuffle_buffer < 0 or pca_lighting < 0:
            raise ValueError("data.num_workers, data.shuffle_buffer and data.pca_lighting must be >= 0")
        if decode not in DECODE_PATHS:
            raise ValueError(f"data.decode must be one of {', '.join(DECODE_PATHS)} (got {decode!r})")
        self.manifest: Manifest = load_manifest(root)
        self.num_classes = self.manifest.num_classes
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size or batch_size
        self.num_workers = num_workers
        self.crop_size = crop_size
        self.full_size = full_size
        self.shuffle_buffer = shuffle_buffer
        self.pca_lighting = pca_lighting
        self.mean_subtraction = mean_subtraction
        self.seed = seed
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.persistent_workers = persistent_workers and num_workers > 0
        # Fork on Linux even where the default would be spawn: a ddp_spawn rank's children default to spawn,
        # and a spawned worker re-imports torch and Lightning (~30 s per worker start on this 2-core box,
        # every epoch). Forking is safe here: workers only read files and decode on the CPU, never CUDA.
        self.multiprocessing_context = multiprocessing_context or (
            "fork" if sys.platform.startswith("linux") else None
        )
        self.mean, self.eigenvalues, self.eigenvectors = self._stats()
        self.decode = decode
        # resize=paper (or a manifest from before the setting existed): the stored images are the paper's
        self.load_size = None if self.manifest.settings.get("resize", "paper") == "paper" else full_size
        self.device_decode = DeviceDecode(crop_size, self.load_size)
        self._check_shards_exist()
        self.verify = verify
        self.shard_checks = ShardChecks(
            [
                (str(self.manifest.root / shard.name), shard.bytes, shard.sha256)
                for split in self.manifest.splits.values()
                for shard in split.shards
            ],
            mode=verify,
            manifest=str(self.manifest.root / MANIFEST_NAME),
        )
        self.rank, self.world_size = 0, 1
        self._train: TrainStream | None = None
        self._evals: list[EvalStream] = []

    def _stats(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        stats = self.manifest.stats
        if stats is None:
            if self.mean_subtraction or self.pca_lighting > 0:
                raise ValueError(
                    f"{self.manifest.root / MANIFEST_NAME} has no stats (mean/PCA); rerun data_prep with "
                    f"stats, or set data.mean_subtraction=false and data.pca_lighting=0"
                )
            return torch.zeros(3), torch.zeros(3), torch.eye(3)
        return (
            torch.tensor(stats.mean, dtype=torch.float32),
            torch.tensor(stats.eigenvalues, dtype=torch.float32),
            torch.tensor(stats.eigenvectors, dtype=torch.float32),
        )

    def _check_shards_exist(self) -> None:
        for split in self.manifest.splits:
            for path in self.manifest.shard_paths(split):
                if not Path(path).is_file():
                    raise FileNotFoundError(
                        f"shard {path} listed in {self.manifest.root / MANIFEST_NAME} is missing; rerun "
                        f"data_prep (it resumes) or point data.root at a complete prep output"
                    )

    def _shards(self, split: str) -> list[tuple[str, int]]:
        return [(str(self.manifest.root / s.name), s.samples) for s in self.manifest.split(split).shards]

    def set_distributed(self, rank: int, world_size: int) -> None:
        """This process's rank among ``world_size`` data-parallel ranks; the loaders built next use it."""
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
        self.rank, self.world_size = rank, world_size

    def setup(self, stage: str | None = None) -> None:
        if self.trainer is not None:
            self.set_distributed(self.trainer.global_rank, self.trainer.world_size)

    def train_dataloader(self) -> EpochDataLoader:
        shards = self._shards("train")
        samples = sum(count for _, count in shards)
        if samples < self.world_size * self.batch_size:
            raise ValueError(
                f"the train split of {self.manifest.root} has {samples} samples, fewer than one global batch "
                f"(world size {self.world_size} x data.batch_size {self.batch_size}); lower data.batch_size"
            )
        on_device = self.decode == "device"
        self._train = TrainStream(
            shards,
            transform=(TrainCropParams if on_device else TrainCrop)(
                self.crop_size, full=self.load_size, num_classes=self.num_classes
            ),
            collate_fn=collate_jpegs if on_device else collate,
            batch_size=self.batch_size,
            shuffle_buffer=self.shuffle_buffer,
            seed=self.seed,
            rank=self.rank,
            world_size=self.world_size,
            num_workers=self.num_workers,
            checks=self.shard_checks,
        )
        return EpochDataLoader(
            self._train, epoch_source=self._trainer_epoch, gather=self._gather_rows, **self._loader_args()
        )

    def val_dataloader(self) -> DataLoader:
        return self.eval_dataloader(crop="center")

    def eval_dataloader(self, crop: Literal["center", "full"] = "center", split: str = "val") -> DataLoader:
        """Eval batches of ``split``, every image exactly once over all ranks and workers.

        ``crop="center"``: the centre ``crop_size`` crop (single-crop eval); ``"full"``: the stored image,
        centre ``full_size`` (256x256 from a paper-style prep: no crop at all), for the paper's 10 crops.
        """
        if crop not in ("center", "full"):
            raise ValueError(f"crop must be 'center' or 'full' (got {crop!r})")
        stream = EvalStream(
            self._shards(split),
            transform=CenterCrop(
                self.crop_size if crop == "center" else self.full_size,
                full=self.load_size,
                num_classes=self.num_classes,
            ),
            batch_size=self.val_batch_size,
            rank=self.rank,
            world_size=self.world_size,
            num_workers=self.num_workers,
            checks=self.shard_checks,
        )
        self._evals.append(stream)
        return DataLoader(stream, batch_size=None, **self._loader_args())

    def _loader_args(self) -> dict:
        # Its own generator: a DataLoader draws its workers' base seed at every pass, from the global RNG
        # otherwise, which would shift dropout and PCA lighting against a resumed job (workers draw nothing).
        args = {
            "num_workers": self.num_workers,
            "pin_memory": self.pin_memory,
            "generator": torch.Generator().manual_seed(self.seed),
        }
        if self.num_workers > 0:
            _register_exit_hook()
            args |= {
                "persistent_workers": self.persistent_workers,
                "multiprocessing_context": self.multiprocessing_context,
                "worker_init_fn": ignore_sigterm_in_worker,
            }
        return args

    def _trainer_epoch(self) -> int | None:
        return self.trainer.current_epoch if self.trainer is not None else None

    def _gather_rows(self, row: torch.Tensor) -> torch.Tensor:
        """[world size, n]: every rank's ``row`` (a collective: every rank calls it at the same point)."""
        trainer = self.trainer
        if trainer is None or trainer.world_size == 1:
            return row[None]
        gathered = trainer.strategy.all_gather(row.to(trainer.strategy.root_device))
        return gathered.cpu().reshape(trainer.world_size, -1)

    @property
    def corrupt_samples(self) -> int:
        """Samples skipped as corrupt, or lost to a damaged shard, so far by this process's train and eval
        loaders (``training.skipped_samples.SkippedSamples`` logs them as ``data/skipped_samples``)."""
        streams = ([self._train] if self._train is not None else []) + self._evals
        return sum(stream.skips.total for stream in streams) + self.device_decode.skipped

    def normalize(self, images: torch.Tensor, *, train: bool, step: int = 0) -> torch.Tensor:
        """uint8 [B, 3, H, W] -> float32 model input: mean subtracted, PCA colour noise added if ``train``,
        drawn from the generator of (seed, ``step``, rank): the same draws in every arm of a seed."""
        mean = self.mean if self.mean_subtraction else torch.zeros(3)
        shift = None
        if train and self.pca_lighting > 0:
            device = images.device
            eigenvalues = self.eigenvalues.to(device) / PIXEL_MAX
            generator = pca_lighting_generator(self.seed, step, self.rank)
            shift = pca_lighting_shift(
                images.shape[0], eigenvalues, self.eigenvectors.to(device), self.pca_lighting, generator
            )
        return to_model_input(images, mean, shift)

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        if isinstance(batch, JpegBatch):  # the JPEG bytes stay on the host: the decoder reads them there
            return batch.to(device)
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def on_after_batch_transfer(
        self, batch: tuple[torch.Tensor, torch.Tensor] | JpegBatch, dataloader_idx: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(batch, JpegBatch):
            batch = self.device_decode(batch)
        images, labels = batch
        training = self.trainer is not None and self.trainer.training
        # the optimizer steps so far: one per training batch (no gradient accumulation here), and restored
        # with the loops on resume, so a batch's lighting draws do not depend on what ran before it
        step = self.trainer.global_step if training else 0
        return self.normalize(images, train=training, step=step), labels
