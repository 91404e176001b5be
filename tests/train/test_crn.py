"""Common random numbers per shipped experiment: which arms start from the baseline's weights and see its data
stream with the same seed (the crn_init / crn_data tags a run records), the PCA lighting draws that no model
setting can move, and the machine identity tags."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate
from lightning.pytorch import seed_everything
from omegaconf import OmegaConf

from pipeline.data.transforms import pca_lighting_generator, pca_lighting_shift
from pipeline.tracking import keys
from pipeline.tracking.machine import cpu_model_and_flags, machine_tags
from pipeline.training.crn import crn_tags, data_stream_settings
from tests.helpers.paths import CONF_DIR
from tests.helpers.training import compose_train

# Every shipped experiment: (same initial weights as the baseline, same data stream) for one seed.
KEEPS_CRN = {
    "baseline": (True, True),
    "demo": (True, True),  # the baseline at demo scale: composed here at demo scale too
    "no_lrn": (True, True),  # LRN has no parameters and draws nothing
    "no_overlap_pool": (True, True),  # 3x3/2 and 2x2/2 pooling give the same map sizes: same fc6
    "no_dropout": (True, True),  # dropout has no parameters; its draws come from the global RNG, no data's
    "no_pca_lighting": (True, True),  # the same lighting draws, scaled by 0: the change itself
    "one_gpu_half": (False, True),  # half the kernels in conv1-conv4: other shapes, other weights
}
SEED = 7


def arm_tags(experiment: str, seed: int = SEED) -> dict[str, str]:
    """The CRN tags ``pipeline.train`` records for this arm: composed as the CLI does, the net built right
    after seeding as train() builds it (at demo scale: the same shapes relation as the paper's net)."""
    cfg = compose_train(["profile=demo", f"+experiment={experiment}", f"seed={seed}", "data.root=/no/shards"])
    seed_everything(int(cfg.seed), workers=True)
    module = instantiate(cfg.model, num_classes=1000, **cfg.optim)
    return crn_tags(module.net, OmegaConf.to_container(cfg.data, resolve=True), world_size=1)


def test_every_shipped_experiment_declares_whether_it_keeps_common_random_numbers():
    assert set(KEEPS_CRN) == {path.stem for path in (CONF_DIR / "experiment").glob("*.yaml")}


@pytest.fixture(scope="module")
def baseline_tags() -> dict[str, str]:
    return arm_tags("baseline")


@pytest.mark.parametrize("experiment", sorted(KEEPS_CRN))
def test_crn_against_the_baseline_per_experiment(experiment: str, baseline_tags: dict[str, str]):
    tags = arm_tags(experiment)
    same_init, same_data = KEEPS_CRN[experiment]
    assert (tags[keys.TAG_CRN_INIT] == baseline_tags[keys.TAG_CRN_INIT]) is same_init
    assert (tags[keys.TAG_CRN_DATA] == baseline_tags[keys.TAG_CRN_DATA]) is same_data


def test_another_seed_is_another_init_and_stream(baseline_tags: dict[str, str]):
    other = arm_tags("baseline", seed=SEED + 1)
    assert other[keys.TAG_CRN_INIT] != baseline_tags[keys.TAG_CRN_INIT]
    assert other[keys.TAG_CRN_DATA] != baseline_tags[keys.TAG_CRN_DATA]


def test_stream_settings_leave_out_what_draws_nothing_and_keep_the_rest():
    data = {"root": "/x", "seed": 1, "batch_size": 32, "pca_lighting": 0.1, "decode": "gpu", "verify": "off"}
    data["knob"] = 3
    settings = data_stream_settings(data, world_size=2)
    assert settings == {"seed": 1, "batch_size": 32, "knob": 3, "world_size": 2}


def test_pca_lighting_draws_depend_on_seed_step_and_rank_only():
    eigenvalues, eigenvectors = torch.tensor([0.2, 0.02, 0.005]), torch.eye(3)

    def shift(seed: int, step: int, rank: int) -> torch.Tensor:
        return pca_lighting_shift(8, eigenvalues, eigenvectors, 0.1, pca_lighting_generator(seed, step, rank))

    torch.manual_seed(0)
    first = shift(1, 5, 0)
    torch.manual_seed(123)
    torch.nn.functional.dropout(torch.ones(1000), 0.5)  # an arm with dropout has drawn from the global RNG
    assert torch.equal(shift(1, 5, 0), first)
    assert not torch.equal(shift(1, 6, 0), first)
    assert not torch.equal(shift(1, 5, 1), first)
    assert not torch.equal(shift(2, 5, 0), first)


def test_machine_tags_name_the_cpu_its_vector_units_and_the_gpu():
    cpuinfo = "processor\t: 0\nmodel name\t: Example CPU 9000\nflags\t\t: fpu sse4_2 avx avx2 fma avx512f\n"
    assert cpu_model_and_flags(cpuinfo) == ("Example CPU 9000", ["sse4_2", "avx", "fma", "avx2", "avx512f"])
    tags = machine_tags()
    assert tags[keys.TAG_TORCH_CPU_CAPABILITY] == torch.backends.cpu.get_cpu_capability()
    assert tags[keys.TAG_TORCH_VERSION] == torch.__version__ and tags[keys.TAG_CPU_MODEL]
    if torch.cuda.is_available():
        assert tags[keys.TAG_GPU_NAME] == torch.cuda.get_device_name(0)
        assert tags[keys.TAG_CUDA_VERSION] == torch.version.cuda
    else:
        assert (tags[keys.TAG_GPU_NAME], tags[keys.TAG_CUDA_VERSION]) == ("none", "none")
