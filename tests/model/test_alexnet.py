"""AlexNet against the 2012 paper: parameter count, layer shapes, LRN formula, init, ablation switches."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pipeline.models.alexnet import AlexNet, GroupedLocalResponseNorm

# docs/design.md's table (Caffe's log of bvlc_alexnet at a 227x227 input): output shape of every layer.
PAPER_SHAPES = {
    "conv1": (96, 55, 55),
    "pool1": (96, 27, 27),
    "conv2": (256, 27, 27),
    "pool2": (256, 13, 13),
    "conv3": (384, 13, 13),
    "conv4": (384, 13, 13),
    "conv5": (256, 13, 13),
    "pool5": (256, 6, 6),
    "fc6": (4096,),
    "fc7": (4096,),
    "fc8": (1000,),
}
WEIGHT_LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")


@pytest.fixture(scope="module")
def paper_net() -> AlexNet:
    torch.manual_seed(0)
    return AlexNet()


def output_shapes(model: nn.Module, x: torch.Tensor) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    handles = [
        getattr(model, name).register_forward_hook(
            lambda _m, _i, out, name=name: shapes.__setitem__(name, tuple(out.shape[1:]))
        )
        for name in PAPER_SHAPES
    ]
    with torch.no_grad():
        model.eval()(x)
    for handle in handles:
        handle.remove()
    return shapes


def test_parameter_count_is_the_papers(paper_net: AlexNet) -> None:
    assert sum(p.numel() for p in paper_net.parameters()) == 60_965_224
    assert list(paper_net.state_dict()) == [
        f"{layer}.{kind}" for layer in WEIGHT_LAYERS for kind in ("weight", "bias")
    ]
    parameterless = [name for name, m in paper_net.named_children() if name not in WEIGHT_LAYERS]
    assert parameterless and all(not list(getattr(paper_net, n).parameters()) for n in parameterless)


def test_every_layer_shape_matches_the_table(paper_net: AlexNet) -> None:
    assert output_shapes(paper_net, torch.randn(1, 3, 227, 227)) == PAPER_SHAPES


def test_grouped_layers_see_only_their_own_tower(paper_net: AlexNet) -> None:
    groups = {name: getattr(paper_net, name).groups for name in ("conv1", "conv2", "conv3", "conv4", "conv5")}
    assert groups == {"conv1": 1, "conv2": 2, "conv3": 1, "conv4": 2, "conv5": 2}
    assert paper_net.conv2.weight.shape == (256, 48, 5, 5)
    assert paper_net.conv3.weight.shape == (384, 256, 3, 3)
    assert paper_net.fc6.weight.shape == (4096, 9216)


def test_non_overlapping_pooling_keeps_the_sizes() -> None:
    model = AlexNet(width=0.25, pool="non_overlap")
    assert (model.pool1.kernel_size, model.pool1.stride) == (2, 2)
    shapes = output_shapes(model, torch.randn(1, 3, 227, 227))
    assert [shapes[p][1:] for p in ("pool1", "pool2", "pool5")] == [(27, 27), (13, 13), (6, 6)]
    overlap = AlexNet(width=0.25)
    assert (overlap.pool5.kernel_size, overlap.pool5.stride) == (3, 2)


@pytest.mark.parametrize(("in_size", "pool5_side"), [(67, 1), (99, 2), (131, 3)])
def test_other_input_sizes_size_fc6_from_the_arithmetic(in_size: int, pool5_side: int) -> None:
    model = AlexNet(10, width=0.25, in_size=in_size)
    assert model.fc6.in_features == 64 * pool5_side**2
    assert model(torch.randn(2, 3, in_size, in_size)).shape == (2, 10)


def lrn_by_formula(a: torch.Tensor, n: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 2.0):
    """b[c] = a[c] / (k + alpha/n * sum_{j=c-n/2}^{c+n/2} a[j]^2)^beta, channels outside [0, C) count as 0."""
    channels = a.shape[1]
    out = torch.empty_like(a)
    for c in range(channels):
        window = a[:, max(0, c - n // 2) : min(channels, c + n // 2 + 1)]
        out[:, c] = a[:, c] / (k + alpha / n * (window**2).sum(dim=1)) ** beta
    return out


def test_lrn_matches_the_papers_formula_per_tower() -> None:
    torch.manual_seed(0)
    # Post-ReLU maps large enough that the normaliser differs clearly from k^beta.
    a = torch.rand(2, 96, 4, 4, dtype=torch.float64) * 300
    grouped_lrn = AlexNet(groups=2, width=0.25).lrn1.double()
    single_lrn = AlexNet(groups=1, width=0.25).lrn1.double()
    expected_per_tower = torch.cat([lrn_by_formula(half) for half in a.chunk(2, dim=1)], dim=1)
    torch.testing.assert_close(grouped_lrn(a), expected_per_tower, rtol=1e-12, atol=0)
    torch.testing.assert_close(single_lrn(a), lrn_by_formula(a), rtol=1e-12, atol=0)
    # Per-tower and all-channel LRN differ only where the 5-map window spans the towers' boundary (47|48).
    differs = (grouped_lrn(a) - single_lrn(a)).abs().amax(dim=(0, 2, 3)) > 1e-9
    assert differs.nonzero().flatten().tolist() == [46, 47, 48, 49]


def test_lrn_module_settings_and_switch() -> None:
    lrn = AlexNet(width=0.25).lrn2
    assert isinstance(lrn, GroupedLocalResponseNorm)
    assert (lrn.size, lrn.alpha, lrn.beta, lrn.k, lrn.groups) == (5, 1e-4, 0.75, 2.0, 2)
    no_lrn = AlexNet(width=0.25, lrn=False)
    assert isinstance(no_lrn.lrn1, nn.Identity) and isinstance(no_lrn.lrn2, nn.Identity)


@pytest.mark.parametrize("bias_init", [1.0, 0.1])
def test_init_follows_the_paper(paper_net: AlexNet, bias_init: float) -> None:
    model = paper_net if bias_init == 1.0 else AlexNet(width=0.25, bias_init=bias_init)
    for name in WEIGHT_LAYERS:
        layer = getattr(model, name)
        weight = layer.weight.detach()
        assert abs(weight.std().item() - 0.01) < 0.0005, name
        assert abs(weight.mean().item()) < 5 * 0.01 / weight.numel() ** 0.5, name
        expected_bias = bias_init if name in ("conv2", "conv4", "conv5", "fc6", "fc7") else 0.0
        assert torch.equal(layer.bias.detach(), torch.full_like(layer.bias, expected_bias)), name


def test_one_gpu_half_halves_conv1_to_conv4_only() -> None:
    for groups in (1, 2):  # the one-GPU net has no towers, whatever groups says
        model = AlexNet(one_gpu_half=True, groups=groups)
        shapes = {name: tuple(getattr(model, name).weight.shape) for name in WEIGHT_LAYERS}
        assert shapes == {
            "conv1": (48, 3, 11, 11),
            "conv2": (128, 48, 5, 5),
            "conv3": (192, 128, 3, 3),
            "conv4": (192, 192, 3, 3),
            "conv5": (256, 192, 3, 3),
            "fc6": (4096, 256 * 6 * 6),
            "fc7": (4096, 4096),
            "fc8": (1000, 4096),
        }
        assert all(getattr(model, f"conv{i}").groups == 1 for i in range(1, 6))
        assert model.lrn1.groups == 1


def test_width_scales_every_layer_and_keeps_groups_whole() -> None:
    quarter = AlexNet(width=0.25)
    assert [getattr(quarter, f"conv{i}").out_channels for i in range(1, 6)] == [24, 64, 96, 96, 64]
    assert quarter.fc6.out_features == quarter.fc7.out_features == 1024
    odd = AlexNet(width=0.1)
    assert all(getattr(odd, f"conv{i}").out_channels % 2 == 0 for i in range(1, 6))
    assert odd.fc6.out_features % 2 == 0


def test_dropout_acts_on_fc6_and_fc7_outputs() -> None:
    torch.manual_seed(0)
    model = AlexNet(10, width=0.25, in_size=67).train()
    seen: dict[str, torch.Tensor] = {}
    model.pool5.register_forward_hook(lambda _m, _i, out: seen.__setitem__("pool5", out.flatten(1).clone()))
    model.fc6.register_forward_pre_hook(lambda _m, args: seen.__setitem__("fc6_in", args[0].clone()))
    model.relu6.register_forward_hook(lambda _m, _i, out: seen.__setitem__("relu6", out.clone()))
    model.fc7.register_forward_pre_hook(lambda _m, args: seen.__setitem__("fc7_in", args[0].clone()))
    model(torch.randn(8, 3, 67, 67))
    assert torch.equal(seen["fc6_in"], seen["pool5"])  # no dropout on fc6's input
    kept = seen["fc7_in"] != 0
    active = seen["relu6"] > 0
    torch.testing.assert_close(seen["fc7_in"][kept], 2 * seen["relu6"][kept])  # inverted dropout, p=0.5
    assert 0.4 < 1 - kept[active].float().mean().item() < 0.6
    model.eval()
    x = torch.randn(2, 3, 67, 67)
    assert torch.equal(model(x), model(x))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"in_size": 224}, "does not tile"),
        ({"in_size": 63}, "too small for three overlap poolings; use at least 67"),
        ({"in_size": 35, "pool": "non_overlap"}, "use at least 39"),
        ({"pool": "avg"}, "pool='avg' is unknown"),
        ({"groups": 3}, "groups=3"),
        ({"width": 0.0}, "width=0.0"),
        ({"dropout": 1.0}, "dropout=1.0"),
        ({"num_classes": 0}, "num_classes=0"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AlexNet(**kwargs)


def test_wrong_input_size_names_in_size() -> None:
    with pytest.raises(ValueError, match="set in_size"):
        AlexNet(10, width=0.25, in_size=67)(torch.randn(1, 3, 99, 99))
