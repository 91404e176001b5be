"""The fast LRN (pipeline.models.lrn) computes torch.nn.LocalResponseNorm's function, forward and backward.

fp32 tolerance: 1e-5 of the reference's largest magnitude, as the issue asks (observed ~2e-7: only the order
of the five-term sums differs). bf16: the error is measured against the unavoidable floor, the rounding of the
exact result to bf16 (unit roundoff 2^-8).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pipeline.models.alexnet import AlexNet
from pipeline.models.lrn import (
    GroupedLocalResponseNorm,
    TorchLocalResponseNorm,
    local_response_norm,
    use_torch_lrn,
)

PAPER = {"size": 5, "alpha": 1e-4, "beta": 0.75, "k": 2.0}
# conv1 and conv2 outputs of the paper's net (batch 2 keeps the test fast; the function is per image).
PAPER_SHAPES = {"conv1": (2, 96, 55, 55), "conv2": (2, 256, 27, 27)}


def post_relu(shape: tuple[int, ...], scale: float, seed: int = 0) -> torch.Tensor:
    """ReLU outputs; at scale 150 the normaliser d ranges over ~2..10, far from k, so the window matters."""
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=generator) * scale).relu()


def values_and_grad(module: torch.nn.Module, x: torch.Tensor, grad: torch.Tensor):
    x = x.detach().clone().requires_grad_()
    y = module(x)
    y.backward(grad)
    return y.detach(), x.grad


def assert_within(actual: torch.Tensor, expected: torch.Tensor, tolerance: float, what: str) -> None:
    error = (actual.double() - expected.double()).abs().max().item()
    scale = expected.abs().max().item()
    assert error <= tolerance * scale, f"{what}: max error {error:.3g} vs scale {scale:.3g}"


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("layer", ["conv1", "conv2"])
def test_values_and_gradients_equal_torch_lrn_in_fp32(layer: str, groups: int, layout: str) -> None:
    x = post_relu(PAPER_SHAPES[layer], scale=150)
    grad = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    if layout == "channels_last":
        x, grad = (t.contiguous(memory_format=torch.channels_last) for t in (x, grad))
    fast_y, fast_grad = values_and_grad(GroupedLocalResponseNorm(**PAPER, groups=groups), x, grad)
    torch_y, torch_grad = values_and_grad(TorchLocalResponseNorm(**PAPER, groups=groups), x, grad)
    assert (fast_y / x.clamp(min=1e-3)).std() > 0.05  # the normaliser really varies over the input
    assert_within(fast_y, torch_y, 1e-5, "values")
    assert_within(fast_grad, torch_grad, 1e-5, "gradients")
    assert fast_y.is_contiguous(memory_format=torch.channels_last) == (layout == "channels_last")


@pytest.mark.parametrize(
    "settings",
    [
        {**PAPER, "groups": 2},
        {"size": 4, "alpha": 1e-2, "beta": 0.6, "k": 1.0, "groups": 1},  # even window, the general pow path
        {"size": 1, "alpha": 1e-2, "beta": 1.0, "k": 0.5, "groups": 3},
    ],
)
def test_backward_is_the_exact_derivative(settings: dict) -> None:
    x = post_relu((1, 12, 2, 3), scale=20).double().requires_grad_()
    fast = GroupedLocalResponseNorm(**settings)
    assert torch.autograd.gradcheck(fast, (x,))
    torch.testing.assert_close(fast(x), TorchLocalResponseNorm(**settings)(x), rtol=1e-12, atol=0)


def lrn_all_in_bf16(x: torch.Tensor, groups: int) -> torch.Tensor:
    """The same arithmetic with the normaliser d itself in bf16: what 'run it all in bf16' would compute."""
    batch, channels, height, width = x.shape
    squares = x.float().pow(2).view(batch * groups, 1, channels // groups, height, width)
    size = PAPER["size"]
    padded = F.pad(squares, (0, 0, 0, 0, size // 2, (size - 1) // 2))
    window_mean = F.avg_pool3d(padded, (size, 1, 1), stride=1).view(x.shape)  # sum / n, as torch does
    d = (window_mean * PAPER["alpha"]).bfloat16() + PAPER["k"]  # d = k + alpha/n * sum, in bf16
    return x * d.pow(-PAPER["beta"])


def rms_relative(result: torch.Tensor, exact: torch.Tensor) -> float:
    nonzero = exact != 0
    relative = (result.double() - exact)[nonzero] / exact[nonzero]
    return relative.pow(2).mean().sqrt().item()


def deviation_bias(y: torch.Tensor, exact: torch.Tensor, x: torch.Tensor) -> float:
    """Mean error of the normalisation's own effect (y - x k^-beta), as a fraction of that effect."""
    plain = x.double() * PAPER["k"] ** -PAPER["beta"]
    effect = exact - plain
    return ((y.double() - plain - effect).mean() / effect.abs().mean()).item()


def test_bf16_is_accurate_to_about_one_bf16_rounding() -> None:
    """Under bf16 autocast the LRN takes and returns bf16; the window sum runs in bf16, d and d^-beta in fp32.

    Measured (conv2's shape, activations at scale 10 / 40 / 150): RMS relative error 2.2e-3 / 2.6e-3 / 2.5e-3
    against 1.7e-3 for rounding the exact result to bf16 (the floor), max 6.9e-3 / 7.3e-3 / 8.9e-3 (floor
    3.9e-3). With d in bf16 as well: RMS 2.6e-3 / 3.8e-3 / 4.2e-3, and where activations are small d's bf16
    spacing (0.016 near k=2) swallows most of the normalisation: its mean effect is 40% too small at scale 10.
    """
    groups = 2
    for scale in (10.0, 40.0, 150.0):
        x = post_relu(PAPER_SHAPES["conv2"], scale).bfloat16()
        exact = TorchLocalResponseNorm(**PAPER, groups=groups)(x.double())
        y = GroupedLocalResponseNorm(**PAPER, groups=groups)(x)
        assert y.dtype == torch.bfloat16
        floor = rms_relative(exact.bfloat16(), exact)
        assert rms_relative(y, exact) <= 1.7 * floor, scale
        assert_within(y, exact, 2**-8 * 3, f"bf16 values at scale {scale}")
        assert abs(deviation_bias(y, exact, x)) < 0.1, scale
        if scale == 10.0:  # the reason d stays in fp32
            assert deviation_bias(lrn_all_in_bf16(x, groups), exact, x) < -0.3


def test_bf16_gradients_are_bf16_and_close() -> None:
    x = post_relu(PAPER_SHAPES["conv2"], scale=40).bfloat16()
    grad = torch.randn(x.shape, generator=torch.Generator().manual_seed(1)).bfloat16()
    fast_y, fast_grad = values_and_grad(GroupedLocalResponseNorm(**PAPER, groups=2), x, grad)
    _, exact_grad = values_and_grad(TorchLocalResponseNorm(**PAPER, groups=2), x.double(), grad.double())
    assert fast_grad.dtype == torch.bfloat16
    assert_within(fast_grad, exact_grad, 2**-8 * 2, "bf16 gradients")  # observed 5.1e-3 = 1.3 roundoffs


def test_autocast_leaves_the_dtype_to_the_input() -> None:
    """Under CPU autocast the LRN is outside autocast's op lists: fp32 in -> fp32 out, bf16 in -> bf16 out."""
    lrn = GroupedLocalResponseNorm(**PAPER, groups=2)
    x = post_relu((1, 8, 5, 5), scale=40)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert lrn(x).dtype == torch.float32
        assert lrn(x.bfloat16()).dtype == torch.bfloat16
        torch.testing.assert_close(lrn(x), local_response_norm(x, **PAPER, groups=2))


def test_bad_settings_name_the_setting() -> None:
    with pytest.raises(ValueError, match="size=0"):
        GroupedLocalResponseNorm(0)
    with pytest.raises(ValueError, match="groups=2 must divide the input's 5 channels"):
        GroupedLocalResponseNorm(5, groups=2)(torch.ones(1, 5, 2, 2))
    with pytest.raises(ValueError, match=r"expected \[B, C, \*spatial\]"):
        GroupedLocalResponseNorm(5)(torch.ones(4, 5))


def test_torch_lrn_swaps_in_with_the_same_settings() -> None:
    torch.manual_seed(0)
    net = AlexNet(10, width=0.25, in_size=67, dropout=0.0)
    x = torch.randn(2, 3, 67, 67) * 50
    fast_logits = net(x)
    use_torch_lrn(net)
    assert isinstance(net.lrn1, TorchLocalResponseNorm) and net.lrn2.groups == 2
    assert (net.lrn1.size, net.lrn1.alpha, net.lrn1.beta, net.lrn1.k) == (5, 1e-4, 0.75, 2.0)
    assert_within(fast_logits.detach(), net(x).detach(), 1e-5, "logits")
