"""pipeline.models.torch_internals: the one use of torch beyond its public API (``nn.Module._apply``), checked
against the installed torch so that an upgrade that changes it fails here, loudly."""

from __future__ import annotations

import inspect

import torch
from torch import nn

from pipeline.models.torch_internals import KeepsDevicesOnMove


class Pinned(KeepsDevicesOnMove):
    """Counts the conversions that reach the hook."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(3))
        self.register_buffer("count", torch.zeros(2))
        self.hooked = 0

    def _apply(self, fn, recurse=True):  # noqa: ANN001 - torch's own signature
        self.hooked += 1
        return super()._apply(fn, recurse)


def test_apply_is_still_the_hook_of_every_conversion() -> None:
    assert list(inspect.signature(nn.Module._apply).parameters) == ["self", "fn", "recurse"]
    module = Pinned()
    for convert in (lambda m: m.to("cpu"), lambda m: m.to(torch.float64), nn.Module.half, nn.Module.cpu):
        before = module.hooked
        convert(module)
        assert module.hooked == before + 1


def test_dtype_conversions_pass_and_tensors_stay_where_they_are() -> None:
    """The moves themselves (cuda:1 kept on cuda:1) are checked on GPUs by test_split_alexnet.py."""
    module = Pinned()
    module.to(torch.float64)
    assert module.weight.dtype == torch.float64 and module.count.dtype == torch.float64
    module.half()
    assert module.weight.dtype == torch.float16 and module.weight.device.type == "cpu"
    assert isinstance(module.weight, nn.Parameter) and float(module.weight.sum()) == 3.0
