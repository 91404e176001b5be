"""Training-step throughput: Lightning (pipeline.training.module.AlexNetModule under a Trainer) against a bare
PyTorch loop with the same net, optimizer, batches and on_after_batch_transfer, side by side in one process.

    python bench/lightning_step.py [--width 1.0] [--batch 32] [--steps 8] [--warmup 2] [--rounds 3]
                                   [--threads 2]

Prints images/s of each (median over interleaved rounds, so load changes on a shared machine hit both) and the
ratio Lightning / bare (target: >= 0.95). The speed settings (precision, LRN, channels_last, compile) are
compared by bench/step.py.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from lightning.pytorch import Callback, Trainer, seed_everything

from pipeline.data.synthetic import SyntheticDataModule
from pipeline.training.module import AlexNetModule


class _StepClock(Callback):
    """Wall time from the first measured batch's start to the last batch's end."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.started = self.ended = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == self.warmup:
            self.started = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.ended = time.perf_counter()


def _module(width: float, in_size: int) -> AlexNetModule:
    seed_everything(0, verbose=False)
    return AlexNetModule(10, width=width, in_size=in_size)


def lightning_images_per_s(
    data: SyntheticDataModule, width: float, in_size: int, steps: int, warmup: int
) -> float:
    clock = _StepClock(warmup)
    trainer = Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=warmup + steps,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[clock],
    )
    trainer.fit(_module(width, in_size), datamodule=data)
    return steps * data.batch_size / (clock.ended - clock.started)


def bare_images_per_s(
    data: SyntheticDataModule, width: float, in_size: int, steps: int, warmup: int
) -> float:
    module = _module(width, in_size)  # the same net and SGD param groups, driven by hand
    net = module.net.train()
    optimizer = module.configure_optimizers()["optimizer"]
    started = 0.0
    for index, batch in enumerate(data.train_dataloader()):
        if index == warmup:
            started = time.perf_counter()
        if index == warmup + steps:
            break
        images, labels = data.on_after_batch_transfer(batch, 0)
        loss = F.cross_entropy(net(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return steps * data.batch_size / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--in-size", type=int, default=227)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    samples = args.batch * (args.steps + args.warmup)
    data = SyntheticDataModule(
        num_classes=10,
        train_samples=samples,
        val_samples=args.batch,
        crop_size=args.in_size,
        batch_size=args.batch,
    )
    bare, lightning = [], []
    for _ in range(args.rounds):
        bare.append(bare_images_per_s(data, args.width, args.in_size, args.steps, args.warmup))
        lightning.append(lightning_images_per_s(data, args.width, args.in_size, args.steps, args.warmup))
    b, lit = statistics.median(bare), statistics.median(lightning)
    print(
        f"width {args.width}, batch {args.batch}, {args.steps} steps x {args.rounds} rounds, "
        f"{args.threads} threads"
    )
    print(f"bare PyTorch loop : {b:8.1f} images/s   (rounds: {', '.join(f'{x:.1f}' for x in bare)})")
    print(f"Lightning         : {lit:8.1f} images/s   (rounds: {', '.join(f'{x:.1f}' for x in lightning)})")
    print(f"ratio Lightning / bare: {lit / b:.3f}  (target >= 0.95)")


if __name__ == "__main__":
    main()
