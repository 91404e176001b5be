"""AlexNet as Krizhevsky, Sutskever and Hinton trained it (NeurIPS 2012), on one device.

The two-GPU connectivity of the paper is expressed with grouped convolutions (``groups=2``): conv2, conv4
and conv5 only see the maps of their own "GPU", conv3 and the FC layers see both.
``pipeline.models.split`` runs the same function with the same weights split over two real devices.

Layer names follow the paper (conv1..conv5, fc6..fc8), so ``state_dict`` keys read ``conv1.weight``,
``fc6.bias``, ...; ReLU, LRN, pooling and dropout are separate parameter-free modules.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

import torch
from torch import nn

from pipeline.models.lrn import GroupedLocalResponseNorm

__all__ = ["AlexNet", "AlexNetHParams", "AlexNetShape", "GroupedLocalResponseNorm", "alexnet_shape"]

# The paper's kernel / unit counts at width 1.0.
PAPER_CONV_KERNELS = (96, 256, 384, 384, 256)
PAPER_FC_UNITS = 4096
POOL_KERNELS = {"overlap": (3, 2), "non_overlap": (2, 2)}
# LRN hyper-parameters (k=2, n=5, alpha=1e-4, beta=0.75); torch divides alpha by n as the original code did.
# The LRN is pipeline.models.lrn's: torch's function, one fused C++ kernel on CPUs, a banded GEMM elsewhere.
LRN_SIZE, LRN_ALPHA, LRN_BETA, LRN_K = 5, 1e-4, 0.75, 2.0
INIT_STD = 0.01


@dataclass(frozen=True)
class AlexNetHParams:
    """The net's hyperparameters, declared once: ``AlexNet``, ``SplitAlexNet`` and the LightningModule (and so
    its checkpoints) take them from here. The defaults are the paper's net.

    Attributes:
        width: multiplies every kernel and unit count (rounded to a multiple of ``groups``), for small demos.
        lrn: local response normalisation after ReLU of conv1 and conv2 (per tower when ``groups=2``).
        pool: ``"overlap"`` (3x3, stride 2, the paper) or ``"non_overlap"`` (2x2, stride 2, the ablation).
        dropout: drop probability on the fc6 and fc7 outputs (0 disables).
        groups: 2 = the two-GPU connectivity of conv2/conv4/conv5 and per-tower LRN; 1 = none.
        one_gpu_half: the paper's one-GPU net (half the kernels in conv1-conv4, no groups); ignores
            ``groups``.
        in_size: input side length; must be 4k + 11 (227 for the paper).
        bias_init: the bias of conv2, conv4, conv5, fc6, fc7 (the paper's 1; Caffe used 0.1); others are 0.
    """

    width: float = 1.0
    lrn: bool = True
    pool: str = "overlap"
    dropout: float = 0.5
    groups: int = 2
    one_gpu_half: bool = False
    in_size: int = 227
    bias_init: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"AlexNet: dropout={self.dropout} must be in [0, 1)")
        alexnet_shape(self)  # checks pool, groups, width and in_size

    @classmethod
    def of(cls, hparams: AlexNetHParams | None = None, **overrides: Any) -> AlexNetHParams:
        """``hparams`` (default: the paper's) with ``overrides``; ValueError naming any unknown keyword."""
        known = {field.name for field in fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"AlexNet: unknown hyperparameter(s) {unknown}; known: {sorted(known)}")
        return replace(hparams or cls(), **overrides)


@dataclass(frozen=True)
class AlexNetShape:
    """Kernel counts, unit counts and spatial sizes implied by the constructor arguments."""

    conv_kernels: tuple[int, int, int, int, int]
    fc_units: int
    conv_groups: tuple[int, int, int, int, int]
    lrn_groups: int
    sizes: tuple[int, int, int, int]  # conv1 output, pool1, pool2, pool5 side lengths

    @property
    def fc6_inputs(self) -> int:
        return self.conv_kernels[4] * self.sizes[3] ** 2


def _scaled(count: int, width: float, multiple: int) -> int:
    """``count * width`` rounded to the nearest positive multiple of ``multiple`` (so groups divide it)."""
    return max(multiple, multiple * round(count * width / multiple))


def _pooled(size: int, pool: str) -> int:
    kernel, stride = POOL_KERNELS[pool]
    return (size - kernel) // stride + 1 if size >= kernel else 0


def _spatial_sizes(in_size: int, pool: str) -> tuple[int, int, int, int]:
    """Side lengths after conv1, pool1, pool2 and pool5 (conv2-conv5 keep the size); 0 = pooled away."""
    conv1_out = (in_size - 11) // 4 + 1
    pool1 = _pooled(conv1_out, pool)
    pool2 = _pooled(pool1, pool)
    return conv1_out, pool1, pool2, _pooled(pool2, pool)


def alexnet_shape(hparams: AlexNetHParams) -> AlexNetShape:
    """Validate the architecture hyperparameters and work out every layer's size (raises ``ValueError``)."""
    width, pool, groups = hparams.width, hparams.pool, hparams.groups
    one_gpu_half, in_size = hparams.one_gpu_half, hparams.in_size
    if pool not in POOL_KERNELS:
        raise ValueError(f"AlexNet: pool={pool!r} is unknown; use one of {sorted(POOL_KERNELS)}")
    if groups not in (1, 2):
        raise ValueError(f"AlexNet: groups={groups!r}; use 2 (the paper's two-GPU connectivity) or 1 (none)")
    if not width > 0:
        raise ValueError(f"AlexNet: width={width!r} must be > 0 (1.0 is the paper's net)")
    if in_size < 11 or (in_size - 11) % 4:
        raise ValueError(
            f"AlexNet: in_size={in_size} does not tile conv1 (11x11, stride 4, no padding); "
            "use 4k + 11, e.g. 227 (the paper's net)"
        )
    sizes = _spatial_sizes(in_size, pool)
    if sizes[3] < 1:
        smallest = next(size for size in range(11, 1000, 4) if _spatial_sizes(size, pool)[3] >= 1)
        raise ValueError(
            f"AlexNet: in_size={in_size} is too small for three {pool} poolings; use at least {smallest}"
        )
    if one_gpu_half:
        # The paper's one-GPU baseline: one tower, half the kernels in conv1-conv4, conv5 and FC kept full.
        groups = 1
        halves = (2, 2, 2, 2, 1)
        kernels = tuple(_scaled(k // h, width, 1) for k, h in zip(PAPER_CONV_KERNELS, halves, strict=True))
    else:
        kernels = tuple(_scaled(k, width, groups) for k in PAPER_CONV_KERNELS)
    return AlexNetShape(
        conv_kernels=kernels,  # type: ignore[arg-type]
        fc_units=_scaled(PAPER_FC_UNITS, width, groups),
        conv_groups=(1, groups, 1, groups, groups),
        lrn_groups=groups,
        sizes=sizes,
    )


class AlexNet(nn.Module):
    """The paper's AlexNet; defaults are the paper's net (60,965,224 parameters at 1000 classes).

    Args:
        num_classes: fc8 outputs.
        hparams: the net's hyperparameters (``AlexNetHParams``; default: the paper's).
        **overrides: any ``AlexNetHParams`` field, replacing that of ``hparams``: ``AlexNet(10, width=0.5)``.
    """

    def __init__(
        self, num_classes: int = 1000, hparams: AlexNetHParams | None = None, **overrides: Any
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"AlexNet: num_classes={num_classes} must be >= 1")
        self.hparams = hparams = AlexNetHParams.of(hparams, **overrides)
        shape = alexnet_shape(hparams)
        self.arch = shape
        self.in_size = hparams.in_size
        c1, c2, c3, c4, c5 = shape.conv_kernels
        g1, g2, g3, g4, g5 = shape.conv_groups
        pool_kernel, pool_stride = POOL_KERNELS[hparams.pool]
        units = shape.fc_units
        lrn, dropout = hparams.lrn, hparams.dropout

        self.conv1 = nn.Conv2d(3, c1, kernel_size=11, stride=4, padding=0, groups=g1)
        self.relu1 = nn.ReLU(inplace=True)
        self.lrn1 = _make_lrn(lrn, shape.lrn_groups)
        self.pool1 = nn.MaxPool2d(pool_kernel, pool_stride)
        self.conv2 = nn.Conv2d(c1, c2, kernel_size=5, padding=2, groups=g2)
        self.relu2 = nn.ReLU(inplace=True)
        self.lrn2 = _make_lrn(lrn, shape.lrn_groups)
        self.pool2 = nn.MaxPool2d(pool_kernel, pool_stride)
        self.conv3 = nn.Conv2d(c2, c3, kernel_size=3, padding=1, groups=g3)
        self.relu3 = nn.ReLU(inplace=True)
        self.conv4 = nn.Conv2d(c3, c4, kernel_size=3, padding=1, groups=g4)
        self.relu4 = nn.ReLU(inplace=True)
        self.conv5 = nn.Conv2d(c4, c5, kernel_size=3, padding=1, groups=g5)
        self.relu5 = nn.ReLU(inplace=True)
        self.pool5 = nn.MaxPool2d(pool_kernel, pool_stride)
        self.fc6 = nn.Linear(shape.fc6_inputs, units)
        self.relu6 = nn.ReLU(inplace=True)
        self.drop6 = nn.Dropout(dropout)
        self.fc7 = nn.Linear(units, units)
        self.relu7 = nn.ReLU(inplace=True)
        self.drop7 = nn.Dropout(dropout)
        self.fc8 = nn.Linear(units, num_classes)
        init_paper_weights(self, hparams.bias_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-3:] != (3, self.in_size, self.in_size):
            raise ValueError(
                f"AlexNet: input of shape {tuple(x.shape)}; expected [B, 3, {self.in_size}, {self.in_size}] "
                "(set in_size to the crop size)"
            )
        x = self.pool1(self.lrn1(self.relu1(self.conv1(x))))
        x = self.pool2(self.lrn2(self.relu2(self.conv2(x))))
        x = self.relu3(self.conv3(x))
        x = self.relu4(self.conv4(x))
        x = self.pool5(self.relu5(self.conv5(x)))
        x = torch.flatten(x, 1)
        x = self.drop6(self.relu6(self.fc6(x)))
        x = self.drop7(self.relu7(self.fc7(x)))
        return self.fc8(x)


def _make_lrn(enabled: bool, groups: int) -> nn.Module:
    if not enabled:
        return nn.Identity()
    return GroupedLocalResponseNorm(LRN_SIZE, alpha=LRN_ALPHA, beta=LRN_BETA, k=LRN_K, groups=groups)


# The paper: "We initialized the neuron biases in the second, fourth, and fifth convolutional layers, as well
# as in the fully-connected hidden layers, with the constant 1" (positive inputs to the ReLUs early on).
BIAS_ONE_LAYERS = ("conv2", "conv4", "conv5", "fc6", "fc7")


@torch.no_grad()
def init_paper_weights(model: nn.Module, bias_init: float) -> None:
    """Weights ~ N(0, 0.01); bias ``bias_init`` in conv2, conv4, conv5, fc6, fc7, 0 elsewhere."""
    for name, layer in model.named_children():
        if isinstance(layer, nn.Conv2d | nn.Linear):
            layer.weight.normal_(0.0, INIT_STD)
            layer.bias.fill_(bias_init if name in BIAS_ONE_LAYERS else 0.0)
