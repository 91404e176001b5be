"""Local response normalisation (the paper's section 3.3), fast: a fused kernel on CPUs, a GEMM elsewhere.

    b[c] = a[c] / (k + alpha/n * sum_{j in window(c)} a[j]^2)^beta,   window(c) = [c - n//2, c + (n-1)//2]

with maps outside [0, C) (or outside the tower, ``groups=2``) counting as 0: ``torch.nn.LocalResponseNorm``'s
function, alpha divided by n as there. torch computes the window sum by padding the squared input and
average-pooling it in 3-D, which is slow on CPUs and has no bfloat16 kernel there (autocast runs it in fp32).

On CPUs the LRN is one C++ kernel (``lrn_cpu.cpp``, built by ``lrn_kernel``): the maps are read once and
written once, the arithmetic is in fp32 whatever the storage dtype, and only the input is kept for the
backward. Elsewhere (GPUs, or a CPU without a compiler) it is torch ops:

The sum over the channel window is a product with a banded (C/groups x C/groups) matrix: one GEMM per
layer in either memory layout (NCHW: per image and tower; channels_last: one product over all pixels). The
backward is written out by hand (a second GEMM, with the transposed band) and keeps the input, d^-beta and
1/d. For the paper's beta = 3/4, d^-beta is rsqrt(d) * sqrt(rsqrt(d)): cheap vector ops instead of ``pow``,
which costs ~8x more per element on this CPU.

Precision of the torch-op path: in bfloat16 (autocast) the squares and the window-sum GEMM run in bf16
(the GEMM accumulates in fp32), d = k + alpha/n * sum and its powers in fp32; d^-beta and 1/d are then
rounded to bf16 once, so each later pass over the maps is a bf16-only op (ops that mix dtypes are ~2x slower
on CPUs). Measured in tests/model/test_lrn.py: RMS error 1.3-1.5x that of rounding the exact result to bf16
(the kernel's: 1.0x). Keeping d in bf16 too would be cheaper but wrong where activations are small: d's bf16
spacing near k = 2 is 0.016, which swallows most of the normalisation there (its mean effect comes out 40%
too small). float16 inputs are widened to fp32 (a squared activation above 256 overflows fp16). No autocast
switch inside: torch.compile mistraces one in an autograd.Function (the ops after it lose autocast);
autocast may narrow the forward GEMM, which is safe.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from pipeline.models import lrn_kernel

__all__ = ["GroupedLocalResponseNorm", "TorchLocalResponseNorm", "local_response_norm", "use_torch_lrn"]


def _check(size: int, groups: int, channels: int | None = None) -> None:
    if size < 1:
        raise ValueError(f"LocalResponseNorm: size={size} must be >= 1")
    if groups < 1 or (channels is not None and channels % groups):
        raise ValueError(f"LocalResponseNorm: groups={groups} must divide the input's {channels} channels")


def _band(channels: int, size: int, scale: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """band[c, j] = ``scale`` where j is in c's window (torch pads n//2 channels before, (n-1)//2 after)."""
    index = torch.arange(channels, device=device)
    offset = index[None, :] - index[:, None]  # j - c
    inside = (offset >= -(size // 2)) & (offset <= (size - 1) // 2)
    return inside.to(dtype) * scale


def _window_sum(t: torch.Tensor, band: torch.Tensor, groups: int) -> torch.Tensor:
    """out[:, c] = sum_j band[c, j] t[:, j] within each of ``groups`` channel blocks, in t's memory layout."""
    batch, channels, *spatial = t.shape
    per_group = channels // groups
    if _memory_format(t) == torch.channels_last:
        # NHWC: each pixel's channels are one contiguous row: one (NHW*G, C/G) x (C/G)^2 GEMM.
        rows = t.permute(0, 2, 3, 1).reshape(-1, per_group)
        height, width = spatial
        return (rows @ band.mT).view(batch, height, width, channels).permute(0, 3, 1, 2)
    blocks = t.contiguous().view(batch * groups, per_group, -1)  # a free view for NCHW
    return torch.matmul(band, blocks).view(t.shape)


def _window_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype of the squares and their window sum: bf16 under bf16 autocast, else at least fp32."""
    return dtype if dtype in (torch.bfloat16, torch.float64) else torch.float32


def _product(a: torch.Tensor, b: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """a * b computed and stored in ``dtype`` (fp16 factors are widened first: their product may overflow)."""
    return torch.mul(a, b) if a.dtype == dtype else a.to(dtype).mul_(b)


def _factors(d: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(d^-beta, 1/d) from d (fp32 or fp64; d's buffer is reused)."""
    if beta == 0.75:  # rsqrt and sqrt are cheap vector ops; pow costs ~8x more per element on this CPU
        root = d.rsqrt_()
        return torch.sqrt(root).mul_(root), root.square_()
    return torch.pow(d, -beta), d.reciprocal_()


class _LocalResponseNorm(torch.autograd.Function):
    """The torch-op path: a hand-written backward that saves the input, d^-beta and 1/d (window dtype)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, size: int, alpha: float, beta: float, k: float, groups: int):
        window = _window_dtype(x.dtype)
        stat = torch.float64 if x.dtype == torch.float64 else torch.float32
        band = _band(x.shape[1] // groups, size, 1.0, window, x.device)
        # alpha/n goes on the squares, not the band: autocast runs the GEMM in fp16 under 16-mixed, where a
        # raw square overflows above 256 (the scaled one above ~57,000), and 0/1 is exact in any dtype.
        squares = _product(x, x, window).mul_(alpha / size)
        d = _window_sum(squares, band, groups).to(stat).add_(k)  # k + alpha/n * window sum
        # Both factors go to the window dtype once: elementwise ops that mix dtypes are ~2x slower on CPUs.
        scale, inverse = (t.to(window) for t in _factors(d, beta))
        ctx.save_for_backward(x, scale, inverse)
        ctx.settings = (size, alpha, beta, groups)
        return _product(x, scale, window).to(x.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: torch.Tensor):
        # y_c = x_c s_c with s = d^-beta, d_c = k + (alpha/n) sum_{j in w(c)} x_j^2, so
        # dL/dx_j = g_j s_j - 2 beta (alpha/n) x_j sum_{c: j in w(c)} g_c x_c s_c / d_c
        x, scale, inverse = ctx.saved_tensors
        size, alpha, beta, groups = ctx.settings
        window = scale.dtype
        inner = _product(grad, x, window).mul_(scale).mul_(inverse)
        band = _band(x.shape[1] // groups, size, -2.0 * beta * alpha / size, window, x.device)
        grad_x = _window_sum(inner, band.mT, groups).mul_(x).addcmul_(grad, scale)
        return grad_x.to(x.dtype), None, None, None, None, None


class _FusedLocalResponseNorm(torch.autograd.Function):
    """The C++ kernel's forward and backward (CPU tensors, NCHW- or channels_last-contiguous)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, size: int, alpha: float, beta: float, k: float, groups: int):
        ctx.save_for_backward(x)
        ctx.settings = (size, alpha, beta, k, groups)
        return torch.ops.alexnet_lrn.forward(x, size, alpha, beta, k, groups)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        grad = grad.to(x.dtype).contiguous(memory_format=_memory_format(x))  # the kernel walks both alike
        return torch.ops.alexnet_lrn.backward(grad, x, *ctx.settings), None, None, None, None, None


def _memory_format(x: torch.Tensor) -> torch.memory_format:
    """channels_last where x is stored so (and is 4-D), else contiguous: the two layouts the kernel reads."""
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def local_response_norm(
    x: torch.Tensor,
    size: int,
    alpha: float = 1e-4,
    beta: float = 0.75,
    k: float = 1.0,
    groups: int = 1,
    fused: bool | None = None,
) -> torch.Tensor:
    """``torch.nn.functional.local_response_norm`` computed within each of ``groups`` channel blocks.

    ``fused``: the C++ kernel or the torch ops; by default the kernel where it runs (CPU tensors, k > 0: its
    zero padding must not divide by zero).
    """
    if x.dim() < 3:
        raise ValueError(f"LocalResponseNorm: input of shape {tuple(x.shape)}; expected [B, C, *spatial]")
    _check(size, groups, x.shape[1])
    runs_here = x.device.type == "cpu" and k > 0 and lrn_kernel.available()
    if fused and not runs_here:
        raise ValueError(
            f"LocalResponseNorm: fused=True needs a CPU tensor, k > 0 and the built kernel (got {x.device}, "
            f"k={k}, kernel available: {lrn_kernel.available()}); fused=None picks the torch ops instead"
        )
    fused = runs_here if fused is None else fused
    if fused:
        dense = x.contiguous(memory_format=_memory_format(x))
        return _FusedLocalResponseNorm.apply(dense, size, alpha, beta, k, groups)
    return _LocalResponseNorm.apply(x, size, alpha, beta, k, groups)


class GroupedLocalResponseNorm(nn.Module):
    """Cross-channel LRN computed separately inside each of ``groups`` equal channel blocks (fast).

    In the paper each GPU normalises only the maps it holds (cuda-convnet's two-GPU layer file has
    ``rnorm1a`` / ``rnorm1b`` over 48 channels each), so with two towers no normalisation window spans
    channels 47|48 of conv1 or 127|128 of conv2. Caffe's bvlc_alexnet normalises across all channels, which
    differs at those boundaries. ``groups=1`` is ``torch.nn.LocalResponseNorm``'s function.
    """

    def __init__(
        self,
        size: int,
        alpha: float = 1e-4,
        beta: float = 0.75,
        k: float = 1.0,
        groups: int = 1,
        fused: bool | None = None,
    ):
        super().__init__()
        _check(size, groups)
        self.size, self.alpha, self.beta, self.k, self.groups = size, alpha, beta, k, groups
        self.fused = fused  # None: the C++ kernel where it runs (CPU), else the torch ops

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return local_response_norm(x, self.size, self.alpha, self.beta, self.k, self.groups, self.fused)

    def extra_repr(self) -> str:
        return f"{self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}, groups={self.groups}"


class TorchLocalResponseNorm(nn.LocalResponseNorm):
    """The reference: ``torch.nn.LocalResponseNorm`` per channel block (tests and benchmarks compare to it)"""

    def __init__(self, size: int, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0, groups: int = 1):
        super().__init__(size, alpha=alpha, beta=beta, k=k)
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, *spatial = x.shape
        # Folding the groups into the batch dimension is a free view for contiguous NCHW input.
        per_group = super().forward(x.reshape(batch * self.groups, channels // self.groups, *spatial))
        return per_group.reshape(x.shape)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, groups={self.groups}"


def use_torch_lrn(model: nn.Module) -> nn.Module:
    """Replace every fast LRN in ``model`` by torch's (same settings), in place; returns ``model``."""
    for parent in model.modules():
        for name, child in parent.named_children():
            if isinstance(child, GroupedLocalResponseNorm):
                settings = dict(alpha=child.alpha, beta=child.beta, k=child.k, groups=child.groups)
                setattr(parent, name, TorchLocalResponseNorm(child.size, **settings))
    return model
