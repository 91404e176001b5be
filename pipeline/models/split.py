"""The paper's two-GPU model split of AlexNet: two towers, each on its own device, with half of every layer.

``SplitAlexNet`` computes the same function as ``AlexNet(groups=2)`` with the same weights, and its
``state_dict`` has the grouped net's keys and shapes (``conv1.weight`` [96, 3, 11, 11], ...), so a checkpoint
written by either loads into the other.

Usage (plain PyTorch, or as the ``model`` of a LightningModule)::

    model = SplitAlexNet(1000, devices=("cuda:0", "cuda:1"))   # AlexNet's arguments, plus devices
    logits = model(images)              # images on any device (devices[0] saves a copy); logits on devices[0]
    loss = F.cross_entropy(logits, labels.to(logits.device)); loss.backward()
    grouped = AlexNet(1000); grouped.load_state_dict(model.state_dict())   # and the other way round

Lightning: the towers are placed at construction and stay there. ``.to(device)``, ``.cuda()`` and
``.cpu()`` (Lightning's strategies call ``.to(root_device)``) convert dtypes only and never move a tower, so
use a trainer whose root device is ``devices[0]`` (the batch then arrives where the logits are computed).
One process drives both devices: do not wrap it in DDP over those same devices. Optimizers over
``model.parameters()`` work as usual (each parameter lives on its tower's device; ``foreach`` SGD groups them
by device). The optimizer state's layout is not the grouped net's: move checkpoints between the layouts by
the model's ``state_dict``.

Where activations cross: as in the paper, only into conv3 and into fc6, fc7 and fc8. Each tower's fc8 holds
half of fc8's inputs (``fc8.weight[:, half]``) and computes partial logits; tower 1's are copied to
``devices[0]`` and summed there, with fc8's bias held by tower 0. LRN runs per tower over the tower's own
maps, as the paper's two GPUs did (see ``GroupedLocalResponseNorm``).

Concurrency: the forward issues each stage for tower 0 and then tower 1. On CUDA, kernel launches are
asynchronous and each GPU has its own default stream, so the two towers compute concurrently while the host
runs ahead; device-to-device copies do not block the host (they order themselves after the source stream's
work). Backward is concurrent too: autograd runs each CUDA device's part on its own worker thread. On the CPU
(both devices "cpu", as the tests run it) the towers run one after the other, with the same arithmetic as the
grouped net.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from pipeline.models.alexnet import LRN_ALPHA, LRN_BETA, LRN_K, LRN_SIZE, AlexNet, AlexNetHParams
from pipeline.models.lrn import GroupedLocalResponseNorm
from pipeline.models.torch_internals import KeepsDevicesOnMove

__all__ = ["SplitAlexNet"]

LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")
TOWERS = 2


class _Tower(nn.Module):
    """One device's half of every layer of ``grouped``, built on the meta device (SplitAlexNet materialises
    it)."""

    def __init__(self, grouped: AlexNet, *, fc8_bias: bool) -> None:
        super().__init__()
        arch = grouped.arch
        c1, c2, c3, c4, c5 = (k // TOWERS for k in arch.conv_kernels)
        units = arch.fc_units // TOWERS
        meta = {"device": "meta"}
        self.conv1 = nn.Conv2d(3, c1, kernel_size=11, stride=4, **meta)
        self.conv2 = nn.Conv2d(c1, c2, kernel_size=5, padding=2, **meta)
        self.conv3 = nn.Conv2d(c2 * TOWERS, c3, kernel_size=3, padding=1, **meta)  # sees both towers
        self.conv4 = nn.Conv2d(c3, c4, kernel_size=3, padding=1, **meta)
        self.conv5 = nn.Conv2d(c4, c5, kernel_size=3, padding=1, **meta)
        self.fc6 = nn.Linear(arch.fc6_inputs, units, **meta)  # sees both towers
        self.fc7 = nn.Linear(units * TOWERS, units, **meta)  # sees both towers
        num_classes = grouped.fc8.out_features
        self.fc8 = nn.Linear(units, num_classes, bias=fc8_bias, **meta)  # own half of the inputs
        # The grouped net's parameter-free layers, with LRN over the tower's own maps only.
        lrn_module: Callable[[], nn.Module] = (
            (lambda: GroupedLocalResponseNorm(LRN_SIZE, alpha=LRN_ALPHA, beta=LRN_BETA, k=LRN_K))
            if isinstance(grouped.lrn1, GroupedLocalResponseNorm)
            else nn.Identity
        )
        self.relu = nn.ReLU(inplace=True)
        self.lrn1, self.lrn2 = lrn_module(), lrn_module()
        self.pool = nn.MaxPool2d(grouped.pool1.kernel_size, grouped.pool1.stride)
        self.drop6, self.drop7 = nn.Dropout(grouped.drop6.p), nn.Dropout(grouped.drop7.p)

    def conv1_to_pool2(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.lrn1(self.relu(self.conv1(x))))
        return self.pool(self.lrn2(self.relu(self.conv2(x))))

    def conv3_to_pool5(self, both_towers: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.conv3(both_towers))
        x = self.relu(self.conv4(x))
        return torch.flatten(self.pool(self.relu(self.conv5(x))), 1)

    def fc6_block(self, both_towers: torch.Tensor) -> torch.Tensor:
        return self.drop6(self.relu(self.fc6(both_towers)))

    def fc7_block(self, both_towers: torch.Tensor) -> torch.Tensor:
        return self.drop7(self.relu(self.fc7(both_towers)))


def _to(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    # non_blocking only towards CUDA: a non-blocking copy to the CPU could be read before it lands.
    return x.to(device, non_blocking=device.type == "cuda")


def _gather(parts: Sequence[torch.Tensor], device: torch.device) -> torch.Tensor:
    """Both towers' activations on ``device``, tower 0's channels first (the grouped net's order)."""
    return torch.cat([_to(part, device) for part in parts], dim=1)


class SplitAlexNet(KeepsDevicesOnMove):
    """``AlexNet(groups=2)`` split over two devices as in the paper; see the module docstring for usage.

    Takes AlexNet's arguments (``num_classes``, ``hparams`` and keyword overrides of it; ``groups`` must be 2
    and ``one_gpu_half`` False: the split *is* the two-GPU connectivity) plus ``devices``, two torch devices
    or strings, e.g. ``("cuda:0", "cuda:1")`` or ``("cpu", "cpu")``. Weights are initialised exactly as
    ``AlexNet`` would be from the same RNG state.
    """

    def __init__(
        self,
        num_classes: int = 1000,
        hparams: AlexNetHParams | None = None,
        *,
        devices: Sequence[str | torch.device] = ("cpu", "cpu"),
        **overrides: Any,
    ) -> None:
        super().__init__()
        hparams = AlexNetHParams.of(hparams, **overrides)
        groups, one_gpu_half = hparams.groups, hparams.one_gpu_half
        if groups != TOWERS or one_gpu_half:
            raise ValueError(
                f"SplitAlexNet: groups={groups}, one_gpu_half={one_gpu_half}; the two-device split needs "
                "groups=2 and one_gpu_half=False (use AlexNet on one device for the other variants)"
            )
        if len(devices) != TOWERS:
            raise ValueError(
                f"SplitAlexNet: devices={devices!r}; give exactly two, e.g. ('cuda:0', 'cuda:1')"
            )
        self.devices = tuple(torch.device(device) for device in devices)
        # The grouped net validates the arguments and draws the weights, so both layouts start identical.
        grouped = AlexNet(num_classes, hparams)
        self.hparams = hparams
        self.arch = grouped.arch
        self.in_size = grouped.in_size
        self.towers = nn.ModuleList(_Tower(grouped, fc8_bias=index == 0) for index in range(TOWERS))
        for tower, device in zip(self.towers, self.devices, strict=True):
            tower.to_empty(device=device)
        self._merged_shapes = {key: value.shape for key, value in grouped.state_dict().items()}
        self.register_state_dict_post_hook(_merge_towers)
        self.register_load_state_dict_pre_hook(_split_into_towers)
        self.load_state_dict(grouped.state_dict())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-3:] != (3, self.in_size, self.in_size):
            raise ValueError(
                f"SplitAlexNet: input of shape {tuple(x.shape)}; expected [B, 3, {self.in_size}, "
                f"{self.in_size}] (set in_size to the crop size)"
            )
        pairs = list(zip(self.towers, self.devices, strict=True))
        h = [tower.conv1_to_pool2(_to(x, device)) for tower, device in pairs]
        h = [tower.conv3_to_pool5(_gather(h, device)) for tower, device in pairs]
        h = [tower.fc6_block(_gather(h, device)) for tower, device in pairs]
        h = [tower.fc7_block(_gather(h, device)) for tower, device in pairs]
        partial_logits = [tower.fc8(own_half) for (tower, _), own_half in zip(pairs, h, strict=True)]
        return partial_logits[0] + _to(partial_logits[1], self.devices[0])


def _split_dim(layer: str) -> int:
    # fc8 is split by its inputs (each tower holds half of them); every other layer by its outputs.
    return 1 if layer == "fc8" else 0


def _merge_towers(module: SplitAlexNet, state_dict: dict, prefix: str, local_metadata: dict) -> None:
    """state_dict post-hook: ``towers.{0,1}.conv1.weight`` -> the grouped net's ``conv1.weight``, etc."""
    for layer in LAYERS:
        for kind in ("weight", "bias"):
            parts = [state_dict.pop(f"{prefix}towers.{i}.{layer}.{kind}", None) for i in range(TOWERS)]
            parts = [part for part in parts if part is not None]
            if not parts:
                continue
            dim = _split_dim(layer) if kind == "weight" else 0
            state_dict[f"{prefix}{layer}.{kind}"] = torch.cat([_to(p, module.devices[0]) for p in parts], dim)


def _split_into_towers(
    module: SplitAlexNet,
    state_dict: dict,
    prefix: str,
    local_metadata: dict,
    strict: bool,
    missing_keys: list[str],
    unexpected_keys: list[str],
    error_msgs: list[str],
) -> None:
    """load_state_dict pre-hook: the grouped net's keys -> each tower's half (missing ones stay missing)."""
    for layer in LAYERS:
        for kind in ("weight", "bias"):
            key = f"{prefix}{layer}.{kind}"
            if key not in state_dict:
                continue
            full = state_dict.pop(key)
            expected = module._merged_shapes[f"{layer}.{kind}"]
            if full.shape != expected:
                error_msgs.append(
                    f"size mismatch for {key}: copying a param with shape {tuple(full.shape)} from "
                    f"checkpoint, the shape in current model is {tuple(expected)}."
                )
                continue
            if layer == "fc8" and kind == "bias":
                state_dict[f"{prefix}towers.0.fc8.bias"] = full
                continue
            dim = _split_dim(layer) if kind == "weight" else 0
            for index, half in enumerate(full.chunk(TOWERS, dim)):
                state_dict[f"{prefix}towers.{index}.{layer}.{kind}"] = half
