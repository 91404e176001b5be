"""Shard data loading: WebDataset pipelines over data_prep's shards and the LightningDataModule on top."""

from pipeline.data.datamodule import ShardDataModule
from pipeline.data.pipeline import EpochDataLoader, EvalStream, TrainStream
from pipeline.data.transforms import CorruptSampleError, pca_lighting_shift, to_model_input

__all__ = [
    "CorruptSampleError",
    "EpochDataLoader",
    "EvalStream",
    "ShardDataModule",
    "TrainStream",
    "pca_lighting_shift",
    "to_model_input",
]
