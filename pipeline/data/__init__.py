"""Shard data loading: WebDataset pipelines over data_prep's shards and the LightningDataModule on top; and a
synthetic in-memory datamodule for smoke runs and benchmarks."""

from pipeline.data.datamodule import ShardDataModule
from pipeline.data.streams import EpochDataLoader, EvalStream, TrainStream
from pipeline.data.synthetic import SyntheticDataModule
from pipeline.data.transforms import CorruptSampleError, pca_lighting_shift, to_model_input

__all__ = [
    "CorruptSampleError",
    "EpochDataLoader",
    "EvalStream",
    "ShardDataModule",
    "SyntheticDataModule",
    "TrainStream",
    "pca_lighting_shift",
    "to_model_input",
]
