"""The one place where the nets rely on torch beyond its public API.

Checked against torch 2.14.1 (the pinned version) and 2.11 (the GPU machine's);
``tests/model/test_torch_internals.py`` fails loudly if the hook is gone or changes meaning.

``nn.Module._apply(fn, recurse)`` is the single path through which ``.to()``, ``.cuda()``, ``.cpu()``,
``.half()``, ``.float()`` and friends convert a module's parameters and buffers. A module whose parts live on
fixed devices (the paper's two-GPU split) must let dtype conversions through but refuse moves; overriding each
public method instead would miss the next one torch adds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn


class KeepsDevicesOnMove(nn.Module):
    """An ``nn.Module`` whose parameters and buffers stay on the devices they were created on: ``.to(device)``
    (as Lightning's strategies call it) converts dtypes only and never moves a tensor."""

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> Any:
        def keep_device(tensor: torch.Tensor) -> torch.Tensor:
            converted = fn(tensor)
            return converted if converted.device == tensor.device else converted.to(tensor.device)

        return super()._apply(keep_device, recurse)
