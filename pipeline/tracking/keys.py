"""The names that training, evaluation and the report share: metric keys, run tags, checkpoint keys.

Defined once here and imported on both sides, so that a rename cannot break a reader silently. Imports
nothing: the report wing and the entries may import it without pulling in torch or MLflow.
"""

from __future__ import annotations

DEFAULT_EXPERIMENT_NAME = "alexnet"  # logger.experiment_name: null means this one

# Metrics. Errors are fractions in [0, 1]; train/* per step, val/* and train/epoch_* per epoch.
TRAIN_LOSS = "train/loss"
TRAIN_TOP1 = "train/top1_error"
TRAIN_EPOCH_TOP1 = "train/epoch_top1_error"
VAL_LOSS = "val/loss"
VAL_TOP1 = "val/top1_error"
VAL_TOP5 = "val/top5_error"
LEARNING_RATE = "lr"
IMAGES_PER_S = "throughput/images_per_s"
DATA_WAIT_FRACTION = "throughput/data_wait_fraction"  # per epoch: share of step time spent waiting for data
SKIPPED_SAMPLES = "data/skipped_samples"  # samples skipped as corrupt or lost to damaged shards, all ranks
# data.verify: shards checked against the manifest's sha256 so far (all ranks, all resumes), and how many of
# them differed from it (their samples are in data/skipped_samples)
SHARDS_CHECKED = "data/shards_checked"
SHARDS_FAILED = "data/shards_failed"
EPOCH = "epoch"  # Lightning logs it at the step of every other metric


def eval_key(crops: str, k: int) -> str:
    """``eval/{center,tencrop}_top{1,5}_error``: the paper's test protocol on the whole val split, logged at
    the end of training (pipeline.final_eval) or later by pipeline.evaluate."""
    return f"eval/{crops}_top{k}_error"


CENTER_TOP1 = eval_key("center", 1)
CENTER_TOP5 = eval_key("center", 5)
TENCROP_TOP1 = eval_key("tencrop", 1)
TENCROP_TOP5 = eval_key("tencrop", 5)
EVAL_IMAGES = "eval/images"  # how many val images that evaluation scored

# Tags of a training run.
TAG_EXPERIMENT = "experiment"  # the experiment config's name (baseline, no_lrn, ...): the table's groups
TAG_SEED = "seed"
TAG_STUDY = "study"  # the sweep (or study=) that a run belongs to
TAG_GIT_COMMIT = "git_commit"
TAG_GIT_DIRTY = "git_dirty"
# MLflow's standard provenance tags (the UI's Source, Version and User columns), set beside the project's own.
TAG_MLFLOW_GIT_COMMIT = "mlflow.source.git.commit"
TAG_MLFLOW_SOURCE_NAME = "mlflow.source.name"
TAG_MLFLOW_SOURCE_TYPE = "mlflow.source.type"
TAG_MLFLOW_USER = "mlflow.user"
SOURCE_NAME_TRAIN = "pipeline.train"  # python -m pipeline.train
SOURCE_TYPE_LOCAL = "LOCAL"  # MLflow's SourceType for a script run on a machine
TAG_HOST = "host"
TAG_WORLD_SIZE = "world_size"
TAG_NUM_NODES = "num_nodes"
TAG_STRATEGY = "strategy"
TAG_TRACKING_UNSENT = "tracking_unsent"  # writes the job could not deliver (journaled): replay them
TAG_CKPT_DIR = "ckpt_dir"  # where the job's checkpoints are: how a requeued job finds its run
TAG_BEST_CHECKPOINT = "best_checkpoint"  # local path of the best checkpoint, logged at the end of training
TAG_EVAL_WEIGHTS = "eval_weights"  # which weights the eval/* metrics score: final | best | checkpoint <file>
# Common random numbers: two runs with the same seed and equal tags start from the same weights (crn_init: a
# hash of the initial parameters) and see the same samples, crops, flips and PCA lighting draws (crn_data: a
# hash of what the data stream is a function of). compare pairs such runs by seed (pipeline.report.pairing).
TAG_CRN_INIT = "crn_init"
TAG_CRN_DATA = "crn_data"
# The lr policy (training.lr_policy): the epochs whose validation dropped the rate, with the reasons (a JSON
# list of {"epoch", "lr", "reason"}), and the epoch at which learning counted as started (no drop before it).
TAG_LR_DROPS = "lr_drops"
TAG_LR_LEARNING_STARTED = "lr_learning_started_epoch"
# The machine a run trained on (pipeline.tracking.machine): results are bit-identical only on the same one.
TAG_CPU_MODEL = "cpu_model"
TAG_CPU_VECTOR = "cpu_vector_extensions"
TAG_TORCH_CPU_CAPABILITY = "torch_cpu_capability"
TAG_GPU_NAME = "gpu_name"
TAG_CUDA_VERSION = "cuda_version"
TAG_TORCH_VERSION = "torch_version"
EVAL_WEIGHTS_FINAL = "final"
EVAL_WEIGHTS_BEST = "best"

# Every run says what it is: training runs KIND_TRAINING, compare's report runs KIND_REPORT (the next
# comparison never reads a report as a training run, and the UI link filters on tags.kind = 'training').
TAG_KIND = "kind"
KIND_TRAINING = "training"
KIND_REPORT = "report"

# Data lineage: the prep output (manifest.json) that trained a run, as an MLflow dataset input.
TAG_DATA_MANIFEST_SHA256 = "data_manifest_sha256"  # the manifest's full sha256 (MLflow caps digests at 36)
TAG_DATA_VERIFY = "data_verify"  # data.verify of the run: skip | fail | off (off: shards not checked)
DATASET_CONTEXT = "train+val"  # the dataset input's mlflow.data.context: one prep holds both splits

# Experiments: MLflow 3 tells model-training experiments from GenAI ones by this tag.
TAG_EXPERIMENT_KIND = "mlflow.experimentKind"
EXPERIMENT_KIND_TRAINING = "custom_model_development"

# Artifact folders of a training run.
ARTIFACT_FIGURES = "figures"
ARTIFACT_CHECKPOINTS = "checkpoints"
ARTIFACT_CONFIG = "config.yaml"  # the resolved config, as YAML

# Inside every checkpoint: the MLflow run it belongs to (so ckpt_path= and evaluate find the run).
CKPT_RUN_ID_KEY = "mlflow_run_id"
