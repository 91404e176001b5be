"""A fixed in-memory dataset of random uint8 images: ``data=synthetic``.

For what must not depend on shards: smoke runs without any data, the step benchmark, and the DDP equivalence
test. Its order is deterministic (no shuffle, no augmentation); under DDP rank r reads the samples r, r + W,
r + 2W, ... (an unshuffled DistributedSampler of its own: Lightning's would shuffle the training set), so the
union of the ranks' batches is exactly the batch one process sees with the same global batch size.
"""

from __future__ import annotations

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset


class SyntheticDataModule(LightningDataModule):
    """Random uint8 images [3, crop_size, crop_size] with labels in [0, num_classes); the same for every seed.

    ``on_after_batch_transfer`` converts to float and subtracts 128 on the device, once per batch, as the
    shard DataModule does with the dataset mean.
    """

    def __init__(
        self,
        *,
        num_classes: int = 10,
        train_samples: int = 256,
        val_samples: int = 64,
        crop_size: int = 227,
        batch_size: int = 32,
        val_batch_size: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if num_classes < 1 or train_samples < 1 or val_samples < 1:
            raise ValueError(
                f"SyntheticDataModule: num_classes={num_classes}, train_samples={train_samples}, "
                f"val_samples={val_samples}; all must be >= 1"
            )
        self.num_classes = num_classes
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size or batch_size
        generator = torch.Generator().manual_seed(seed)
        self.train_set = self._make(train_samples, crop_size, generator)
        self.val_set = self._make(val_samples, crop_size, generator)

    def _make(self, samples: int, size: int, generator: torch.Generator) -> TensorDataset:
        images = torch.randint(0, 256, (samples, 3, size, size), dtype=torch.uint8, generator=generator)
        labels = torch.randint(0, self.num_classes, (samples,), generator=generator)
        return TensorDataset(images, labels)

    def _loader(self, dataset: TensorDataset, batch_size: int, drop_last: bool) -> DataLoader:
        world = self.trainer.world_size if self.trainer is not None else 1
        if world == 1:
            return DataLoader(dataset, batch_size=batch_size, shuffle=False, drop_last=drop_last)
        rank = self.trainer.global_rank
        sampler = DistributedSampler(
            dataset, num_replicas=world, rank=rank, shuffle=False, drop_last=drop_last
        )
        return DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=drop_last)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, self.batch_size, drop_last=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, self.val_batch_size, drop_last=False)

    def on_after_batch_transfer(
        self, batch: tuple[torch.Tensor, torch.Tensor], dataloader_idx: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = batch
        return images.float().sub_(128.0), labels
