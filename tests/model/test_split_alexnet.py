"""SplitAlexNet (the paper's two-device split) computes the grouped AlexNet's function with its weights.

Tolerances: float64 outputs and gradients agree to 1e-12 of each tensor's largest magnitude (observed ~1e-15:
only fc8's sum order differs); float32 to 1e-5 of it (observed <= 1e-6). The split's arithmetic is the grouped
net's, per tower, so anything beyond rounding is a wiring error (a swapped tower, a crossed LRN window, ...).
"""

from __future__ import annotations

import io

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.models.alexnet import AlexNet
from pipeline.models.split import SplitAlexNet

SMALL = {"num_classes": 10, "width": 0.25, "in_size": 67}
LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")
TOLERANCE = {torch.float64: 1e-12, torch.float32: 1e-5}


def twin_nets(
    dtype: torch.dtype = torch.float32, devices=("cpu", "cpu"), **kwargs
) -> tuple[AlexNet, SplitAlexNet]:
    args = {**SMALL, **kwargs}
    torch.manual_seed(0)
    grouped = AlexNet(**args).to(dtype)
    split = SplitAlexNet(**args, devices=devices).to(dtype)
    split.load_state_dict(grouped.state_dict())
    return grouped, split


def merged_grads(split: SplitAlexNet) -> dict[str, torch.Tensor]:
    """The towers' gradients laid out as the grouped net's (fc8 split by inputs, the rest by outputs)."""
    grads = {}
    for layer in LAYERS:
        halves = [getattr(tower, layer) for tower in split.towers]
        weight_dim = 1 if layer == "fc8" else 0
        grads[f"{layer}.weight"] = torch.cat([h.weight.grad.to("cpu") for h in halves], weight_dim)
        biases = [h.bias.grad.to("cpu") for h in halves if h.bias is not None]
        grads[f"{layer}.bias"] = torch.cat(biases)
    return grads


def assert_close_to_scale(
    actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, what: str
) -> None:
    error = (actual.to("cpu") - expected.to("cpu")).abs().max().item()
    scale = expected.abs().max().item()
    assert error <= TOLERANCE[dtype] * scale, f"{what}: max error {error:.3g} vs scale {scale:.3g}"


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_same_outputs_and_gradients(dtype: torch.dtype) -> None:
    grouped, split = twin_nets(dtype, dropout=0.0)
    x = torch.randn(4, 3, 67, 67, dtype=dtype) * 50
    labels = torch.tensor([0, 3, 7, 9])
    logits_grouped, logits_split = grouped(x), split(x)
    assert_close_to_scale(logits_split, logits_grouped, dtype, "logits")
    F.cross_entropy(logits_grouped, labels).backward()
    F.cross_entropy(logits_split, labels).backward()
    split_grads = merged_grads(split)
    for name, param in grouped.named_parameters():
        assert_close_to_scale(split_grads[name], param.grad, dtype, f"grad of {name}")


def test_dropout_nets_agree_in_eval_mode() -> None:
    grouped, split = twin_nets(torch.float64, dropout=0.5)
    x = torch.randn(3, 3, 67, 67, dtype=torch.float64) * 50
    assert_close_to_scale(split.eval()(x), grouped.eval()(x), torch.float64, "eval logits")


def test_lrn_runs_per_tower_in_both_layouts() -> None:
    """Both layouts normalise each tower's maps alone; an all-channel LRN would break the equality."""
    grouped, split = twin_nets(torch.float64, dropout=0.0)
    x = torch.randn(2, 3, 67, 67, dtype=torch.float64) * 50
    grouped.lrn1.groups = grouped.lrn2.groups = 1  # Caffe's variant: windows span the tower boundary
    error = (split(x) - grouped(x)).abs().max().item()
    assert error > 1e-9


def test_without_lrn_and_with_non_overlapping_pools() -> None:
    grouped, split = twin_nets(torch.float64, dropout=0.0, lrn=False, pool="non_overlap", in_size=99)
    x = torch.randn(2, 3, 99, 99, dtype=torch.float64)
    assert_close_to_scale(split(x), grouped(x), torch.float64, "logits")


def test_state_dict_has_the_grouped_keys_and_round_trips_both_ways() -> None:
    grouped, split = twin_nets()
    reference = {k: v.clone() for k, v in grouped.state_dict().items()}
    split_state = split.state_dict()
    assert list(split_state) == list(reference)
    assert {k: v.shape for k, v in split_state.items()} == {k: v.shape for k, v in reference.items()}
    assert all(torch.equal(split_state[k], reference[k]) for k in reference)

    # split -> grouped -> split through a saved checkpoint file's bytes, with fresh nets each way
    torch.manual_seed(1)
    fresh_grouped = AlexNet(**SMALL)
    buffer = io.BytesIO()
    torch.save(split.state_dict(), buffer)
    buffer.seek(0)
    fresh_grouped.load_state_dict(torch.load(buffer, weights_only=True))
    torch.manual_seed(2)
    fresh_split = SplitAlexNet(**SMALL)
    assert not torch.equal(fresh_split.state_dict()["conv3.weight"], reference["conv3.weight"])
    fresh_split.load_state_dict(fresh_grouped.state_dict())
    assert all(torch.equal(fresh_split.state_dict()[k], reference[k]) for k in reference)


def test_checkpoints_move_when_nested_under_a_prefix() -> None:
    """As inside a LightningModule (``model.conv1.weight``)."""
    grouped, split = twin_nets()
    holder_split, holder_grouped = nn.Module(), nn.Module()
    holder_split.model, holder_grouped.model = split, AlexNet(**SMALL)
    assert list(holder_split.state_dict()) == [f"model.{k}" for k in grouped.state_dict()]
    holder_grouped.load_state_dict(holder_split.state_dict())
    assert torch.equal(holder_grouped.model.fc8.weight, grouped.fc8.weight)


def test_mismatched_checkpoint_is_refused() -> None:
    _, split = twin_nets()
    wider = AlexNet(**{**SMALL, "width": 0.5})
    with pytest.raises(RuntimeError, match=r"size mismatch for conv1.weight"):
        split.load_state_dict(wider.state_dict())
    without_fc8 = {k: v for k, v in AlexNet(**SMALL).state_dict().items() if not k.startswith("fc8")}
    with pytest.raises(RuntimeError, match=r"Missing key\(s\).*fc8\.weight"):
        split.load_state_dict(without_fc8)


def test_same_loss_curve_under_sgd() -> None:
    """Five SGD steps (the paper's lr, momentum, weight decay) on the same batches: same losses, weights."""
    dtype = torch.float32
    grouped, split = twin_nets(dtype, dropout=0.0)
    initial_fc6 = grouped.fc6.weight.detach().clone()
    optimizers = [
        torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
        for net in (grouped, split)
    ]
    generator = torch.Generator().manual_seed(0)
    curves: list[list[float]] = [[], []]
    for _ in range(5):
        x = torch.randn(8, 3, 67, 67, generator=generator, dtype=dtype) * 50
        labels = torch.randint(0, 10, (8,), generator=generator)
        for net, optimizer, curve in zip((grouped, split), optimizers, curves, strict=True):
            optimizer.zero_grad()
            loss = F.cross_entropy(net(x), labels)
            loss.backward()
            optimizer.step()
            curve.append(loss.item())
    assert (grouped.fc6.weight - initial_fc6).abs().max() > 1e-4  # the weights really moved
    torch.testing.assert_close(curves[1], curves[0], rtol=TOLERANCE[dtype], atol=0)
    split_state = split.state_dict()
    for name, value in grouped.state_dict().items():
        assert_close_to_scale(split_state[name], value, dtype, f"{name} after 5 steps")


def test_the_split_net_under_bf16_autocast_crosses_in_bf16() -> None:
    """The split moves activations between its towers: under autocast they cross in bf16, logits land in
    bf16 on devices[0], and the weights' gradients stay fp32. Its logits are the grouped net's up to bf16
    rounding (2^-8 relative per rounding; observed ~1% of the logits' scale after eight layers)."""
    grouped, module = twin_nets(dropout=0.0)
    crossing = []
    for tower in module.towers:
        for layer in (tower.conv3, tower.fc6, tower.fc7):
            layer.register_forward_hook(lambda _m, inputs, _out: crossing.append(inputs[0].dtype))
    x = torch.randn(2, 3, 67, 67) * 50
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, grouped_logits = module(x), grouped(x)
    assert logits.dtype == torch.bfloat16 and set(crossing) == {torch.bfloat16} and len(crossing) == 6
    error = (logits.float() - grouped_logits.float()).abs().max().item()
    assert error <= 0.05 * grouped_logits.float().abs().max().item()
    F.cross_entropy(logits.float(), torch.tensor([1, 2])).backward()
    assert {p.grad.dtype for p in module.parameters()} == {torch.float32}


def test_towers_hold_half_of_every_layer() -> None:
    split = SplitAlexNet(devices=("cpu", torch.device("cpu")))
    for tower in split.towers:
        kernels = [getattr(tower, f"conv{i}").out_channels for i in range(1, 6)]
        assert kernels == [48, 128, 192, 192, 128]
        assert (tower.fc6.out_features, tower.fc7.out_features, tower.fc8.in_features) == (2048, 2048, 2048)
        # Crossings only into conv3 and the FC layers: conv2/4/5 read only the tower's own maps.
        assert (tower.conv2.in_channels, tower.conv3.in_channels) == (48, 256)
        assert (tower.conv4.in_channels, tower.conv5.in_channels) == (192, 192)
        assert (tower.fc6.in_features, tower.fc7.in_features) == (9216, 4096)
    assert split.towers[0].fc8.bias is not None and split.towers[1].fc8.bias is None
    assert sum(p.numel() for p in split.parameters()) == 60_965_224


def test_same_seed_gives_the_grouped_nets_initial_weights() -> None:
    torch.manual_seed(5)
    grouped = AlexNet(**SMALL)
    torch.manual_seed(5)
    split = SplitAlexNet(**SMALL)
    assert all(torch.equal(split.state_dict()[k], v) for k, v in grouped.state_dict().items())


def test_moving_the_module_keeps_towers_in_place_and_converts_dtypes() -> None:
    _, split = twin_nets()
    split.to("cpu").double()
    assert {p.device for p in split.parameters()} == {torch.device("cpu")}
    assert {p.dtype for p in split.parameters()} == {torch.float64}
    assert split.devices == (torch.device("cpu"), torch.device("cpu"))


class Classifier(L.LightningModule):
    """The smallest LightningModule holding a model as ``self.model``, as pipeline.training.module does."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], _index: int) -> torch.Tensor:
        images, labels = batch
        return F.cross_entropy(self.model(images), labels)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01, momentum=0.9)


def test_lightning_trains_the_split_and_its_checkpoint_loads_into_the_grouped_net(tmp_path) -> None:
    torch.manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(8, 3, 67, 67) * 50, torch.randint(0, 10, (8,)))
    module = Classifier(SplitAlexNet(**SMALL, dropout=0.0))
    before = module.model.state_dict()["fc6.weight"].clone()
    trainer = L.Trainer(
        accelerator="cpu", max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False
    )
    trainer.fit(module, torch.utils.data.DataLoader(data, batch_size=4))
    trainer.save_checkpoint(tmp_path / "split.ckpt")
    assert not torch.equal(module.model.state_dict()["fc6.weight"], before)
    grouped = Classifier(AlexNet(**SMALL, dropout=0.0))
    grouped.load_state_dict(torch.load(tmp_path / "split.ckpt", weights_only=True)["state_dict"])
    x = torch.randn(2, 3, 67, 67)
    assert_close_to_scale(module.model.eval()(x), grouped.model.eval()(x), torch.float32, "logits")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"groups": 1}, "groups=1"),
        ({"one_gpu_half": True}, "one_gpu_half=True"),
        ({"devices": ("cpu",)}, "exactly two"),
        ({"pool": "avg"}, "pool='avg'"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SplitAlexNet(**{**SMALL, **kwargs})


CUDA_DEVICE_PAIRS = [("cuda:0", "cuda:0"), ("cpu", "cuda:0"), ("cuda:0", "cpu"), ("cuda:0", "cuda:1")]


@pytest.mark.gpu
@pytest.mark.parametrize("devices", CUDA_DEVICE_PAIRS)
def test_split_over_cuda_devices_matches_the_grouped_net(devices: tuple[str, str]) -> None:
    needed = 1 + max(int(d.split(":")[1]) for d in devices if d.startswith("cuda"))
    if torch.cuda.device_count() < needed:
        pytest.skip(f"needs {needed} CUDA device(s)")
    grouped, split = twin_nets(torch.float64, devices=devices, dropout=0.0)
    assert [next(t.parameters()).device for t in split.towers] == [torch.device(d) for d in devices]
    x = torch.randn(4, 3, 67, 67, dtype=torch.float64) * 50
    labels = torch.tensor([1, 2, 3, 4])
    logits = split(x.to(devices[0]))
    assert logits.device == torch.device(devices[0])
    assert_close_to_scale(logits, grouped(x), torch.float64, "logits")
    F.cross_entropy(grouped(x), labels).backward()
    F.cross_entropy(logits, labels.to(logits.device)).backward()
    split_grads = merged_grads(split)
    for name, param in grouped.named_parameters():
        assert_close_to_scale(split_grads[name], param.grad, torch.float64, f"grad of {name}")
