"""Step ``split``: the paper's two-device split with both towers on one device (``cuda:0`` twice) against the
single-device grouped net with the same weights: logits, loss and every gradient.

The two compute the same function; they differ only in summation order (two convolutions instead of one
grouped one, fc8 in two partial products), so in fp32 the bound is 1e-4 relative to the largest value for
the logits and 1e-3 for each gradient's RMS error relative to its norm (TF32, where cuDNN picks it for
convolutions, rounds to 10 bits). RMS, not the largest element: where two values in a max-pool window are
within rounding of each other, the two nets may route that window's gradient to different inputs, a
legitimate difference that moved single elements by up to 2% of the largest (seen on the CPU with an
unseeded init; the net is seeded now).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from bench.gpu_check.common import Context, StepResult, max_relative, rms_relative, verdict
from pipeline.models.alexnet import AlexNet
from pipeline.models.split import SplitAlexNet

LOGITS_BOUND, GRAD_BOUND = 1e-4, 1e-3


def _forward_backward(net: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor):
    logits = net(images)
    loss = F.cross_entropy(logits, labels.to(logits.device))
    loss.backward()
    grads = {name: p.grad for name, p in net.named_parameters()}
    return logits.detach(), float(loss.detach()), grads


def run(ctx: Context) -> StepResult:
    batch, width = (4, 0.25) if ctx.quick else (64, 1.0)
    device = ctx.device
    torch.manual_seed(0)
    grouped = AlexNet(1000, width=width, dropout=0.0).to(device)
    split = SplitAlexNet(1000, width=width, dropout=0.0, devices=(device, device))
    split.load_state_dict(grouped.state_dict())
    generator = torch.Generator().manual_seed(1)
    images = (torch.randn(batch, 3, 227, 227, generator=generator) * 50).to(device)
    labels = torch.randint(0, 1000, (batch,), generator=generator).to(device)
    logits, loss, grads = _forward_backward(grouped, images, labels)
    split_logits, split_loss, _ = _forward_backward(split, images, labels)
    # The split's gradients in the grouped layout: its state_dict hook merges the towers; gradients are merged
    # the same way by loading them as a state dict into a grouped copy.
    merged = AlexNet(1000, width=width, dropout=0.0).to(device)
    merged.load_state_dict(_grad_state_dict(split))
    grad_errors = {
        name: rms_relative(dict(merged.named_parameters())[name].detach(), grad)
        for name, grad in grads.items()
    }
    checks = {
        "logits on the first device": split_logits.device == torch.device(device),
        f"logits within {LOGITS_BOUND}": max_relative(split_logits, logits) <= LOGITS_BOUND,
        f"loss within {LOGITS_BOUND}": abs(split_loss - loss) <= LOGITS_BOUND * max(1.0, abs(loss)),
        f"every gradient within {GRAD_BOUND}": max(grad_errors.values()) <= GRAD_BOUND,
    }
    details = {"batch": batch, "width": width, "devices": [str(device)] * 2, "loss": loss,
               "split_loss": split_loss, "logits_error": max_relative(split_logits, logits),
               "worst_gradient": max(grad_errors, key=grad_errors.get), "grad_errors": grad_errors,
               "checks": checks}  # fmt: skip
    return StepResult(verdict(checks), details)


def _grad_state_dict(split: SplitAlexNet) -> dict[str, torch.Tensor]:
    """The split's gradients under the grouped net's keys: its parameters swapped for their gradients, then
    its own state_dict hook (which merges the towers) does the layout."""
    saved = {}
    with torch.no_grad():
        for name, parameter in split.named_parameters():
            saved[name] = parameter.detach().clone()
            parameter.copy_(parameter.grad)
        merged = {key: value.clone() for key, value in split.state_dict().items()}
        for name, parameter in split.named_parameters():
            parameter.copy_(saved[name])
    return merged
