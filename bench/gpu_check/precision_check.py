"""Step ``bf16``: a bf16-mixed training step's loss against fp32's, on the paper's net and one fixed batch.

Both start from the same weights and batch (dropout off, so the two differ by rounding alone) and take three
SGD steps each; every step's loss is compared. At the start the loss is ~ln(1000) = 6.9 and bf16's 2^-8
relative rounding of the logits moves it by ~0.01 (the CPU tests' bound, tests/train/test_precision.py, is
0.02 for a step's loss): the bound here is 0.02 per step. Also checked: the logits come out in bf16 under
autocast and the loss is finite.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from bench.gpu_check.common import Context, StepResult, verdict
from pipeline.models.alexnet import AlexNet

TOLERANCE, STEPS = 0.02, 3


def _losses(net: torch.nn.Module, images, labels, dtype: torch.dtype | None, device: torch.device):
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    losses, logits_dtype = [], None
    for _ in range(STEPS):
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            logits = net(images)
            loss = F.cross_entropy(logits, labels)
        logits_dtype = logits.dtype
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return losses, logits_dtype


def run(ctx: Context) -> StepResult:
    batch, width = (4, 0.125) if ctx.quick else (128, 1.0)
    torch.manual_seed(0)
    net = AlexNet(1000, width=width, dropout=0.0).to(ctx.device)
    generator = torch.Generator().manual_seed(1)
    images = (torch.randn(batch, 3, 227, 227, generator=generator) * 50).to(ctx.device)
    labels = torch.randint(0, 1000, (batch,), generator=generator).to(ctx.device)
    fp32, _ = _losses(copy.deepcopy(net), images, labels, None, ctx.device)
    bf16, logits_dtype = _losses(copy.deepcopy(net), images, labels, torch.bfloat16, ctx.device)
    differences = [abs(a - b) for a, b in zip(fp32, bf16, strict=True)]
    checks = {
        "losses finite": all(map(torch.isfinite, torch.tensor(fp32 + bf16))),
        "logits in bf16 under autocast": logits_dtype == torch.bfloat16,
        f"each step's loss within {TOLERANCE} of fp32's": max(differences) <= TOLERANCE,
    }
    details = {"batch": batch, "width": width, "fp32_losses": fp32, "bf16_losses": bf16,
               "differences": differences, "checks": checks}  # fmt: skip
    return StepResult(verdict(checks), details)
