"""AlexNetModule's speed settings (channels_last, compile) change how a step runs, not what it computes."""

from __future__ import annotations

import logging

import lightning as L
import pytest
import torch
import torch.nn.functional as F

from pipeline.data.datamodule import ShardDataModule
from pipeline.data.synthetic import SyntheticDataModule
from pipeline.tracking import keys
from pipeline.training.module import AlexNetModule

TINY = {"num_classes": 10, "width": 0.125, "in_size": 67, "dropout": 0.0}


def twin_modules(**settings) -> tuple[AlexNetModule, AlexNetModule]:
    torch.manual_seed(0)
    plain = AlexNetModule(**TINY)
    torch.manual_seed(0)
    return plain, AlexNetModule(**TINY, **settings)


def loss_and_grads(module: AlexNetModule, x: torch.Tensor, labels: torch.Tensor) -> tuple[float, dict]:
    module.zero_grad()
    loss = F.cross_entropy(module(x), labels)
    loss.backward()
    return loss.item(), {name: p.grad.clone() for name, p in module.net.named_parameters()}


def test_channels_last_computes_the_same_step() -> None:
    plain, nhwc = twin_modules(channels_last=True)
    assert nhwc.net.conv2.weight.is_contiguous(memory_format=torch.channels_last)
    assert not plain.net.conv2.weight.is_contiguous(memory_format=torch.channels_last)
    assert list(nhwc.state_dict()) == list(plain.state_dict())
    seen = {}

    def record_lrn_input(
        _module, inputs, _output
    ) -> None:  # a hook returning a value would replace the output
        seen.setdefault("lrn1_in", inputs[0])

    nhwc.net.lrn1.register_forward_hook(record_lrn_input)
    x = torch.randn(4, 3, 67, 67, generator=torch.Generator().manual_seed(1)) * 50
    labels = torch.tensor([0, 3, 7, 9])
    plain_loss, plain_grads = loss_and_grads(plain, x, labels)
    nhwc_loss, nhwc_grads = loss_and_grads(nhwc, x, labels)  # x arrives NCHW; forward converts it
    assert seen["lrn1_in"].is_contiguous(memory_format=torch.channels_last)  # the maps really are NHWC
    assert nhwc_loss == pytest.approx(plain_loss, rel=1e-5)
    for name, grad in plain_grads.items():
        scale = grad.abs().max().item()
        assert (nhwc_grads[name] - grad).abs().max().item() <= 1e-4 * scale, name


def test_compile_with_the_split_net_is_refused() -> None:
    with pytest.raises(ValueError, match=r"model\.compile=true with model\.split_devices"):
        AlexNetModule(**TINY, split_devices=["cpu", "cpu"], compile=True)


def _quiet_trainer(**kwargs) -> L.Trainer:
    return L.Trainer(
        accelerator="cpu",
        max_epochs=1,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kwargs,
    )


def test_bf16_mixed_normalises_batches_outside_autocast_and_runs_the_net_inside(demo_shards) -> None:
    """Lightning's bf16-mixed: the shard DataModule's per-batch float conversion, mean and PCA noise run in
    fp32 outside autocast (its PCA matmul would otherwise run in bf16); the net's logits come out bf16."""
    torch.manual_seed(0)
    module = AlexNetModule(**TINY, channels_last=True)
    data = ShardDataModule(demo_shards, batch_size=8, num_workers=0, crop_size=67, shuffle_buffer=16)
    seen: dict[str, object] = {}
    transfer = data.on_after_batch_transfer

    def recording_transfer(batch, dataloader_idx):
        seen.setdefault("autocast_in_transfer", torch.is_autocast_enabled("cpu"))
        images, labels = transfer(batch, dataloader_idx)
        seen.setdefault("images", images.dtype)
        return images, labels

    def record_logits(_module, _inputs, logits) -> None:
        seen.setdefault("logits", logits.dtype)

    data.on_after_batch_transfer = recording_transfer
    module.net.register_forward_hook(record_logits)
    _quiet_trainer(precision="bf16-mixed", limit_train_batches=2, limit_val_batches=0).fit(module, data)
    assert seen == {"autocast_in_transfer": False, "images": torch.float32, "logits": torch.bfloat16}
    assert {p.dtype for p in module.parameters()} == {torch.float32}  # mixed: the weights stay fp32


@pytest.mark.slow
def test_compile_trains_and_logs_its_first_call_once(caplog) -> None:
    """The one compile test (compiling costs tens of seconds on the CPU): tiny net, 3 steps, 1 val batch."""
    torch.manual_seed(0)
    module = AlexNetModule(**TINY, compile=True, channels_last=True)
    keys_before = list(module.state_dict())
    data = SyntheticDataModule(num_classes=10, train_samples=24, val_samples=8, crop_size=67, batch_size=8)
    trainer = _quiet_trainer(precision="bf16-mixed", limit_val_batches=1)
    with caplog.at_level(logging.INFO, logger="pipeline.training.module"):
        trainer.fit(module, datamodule=data)
    assert trainer.global_step == 3 and torch.isfinite(torch.tensor(trainer.callback_metrics[keys.VAL_LOSS]))
    messages = [r.getMessage() for r in caplog.records if "torch.compile" in r.getMessage()]
    assert len(messages) == 2, messages  # once for the first train step, once for the first val step
    assert messages[0].startswith("torch.compile: the first train step took")
    assert messages[1].startswith("torch.compile: the first validation step took")
    assert list(module.state_dict()) == keys_before  # nn.Module.compile: no _orig_mod. prefix


def test_sgd_is_fused_and_takes_foreachs_step() -> None:
    """The fused SGD (one kernel per tensor) makes the paper's update: momentum, weight decay, both groups."""
    torch.manual_seed(0)
    module = AlexNetModule(**TINY, decay_biases=False, init_std=0.028, bias_init=0.1)  # the demo's init
    fused = module.configure_optimizers()["optimizer"]
    assert fused.defaults["fused"] is True
    foreach = torch.optim.SGD(
        module._param_groups(5e-4, decay_biases=False), lr=0.01, momentum=0.9, foreach=True
    )
    start = {name: p.detach().clone() for name, p in module.named_parameters()}
    x, labels = torch.randn(4, 3, 67, 67) * 50, torch.tensor([0, 3, 7, 9])
    results = []
    for optimizer in (fused, foreach):
        with torch.no_grad():
            for name, p in module.named_parameters():
                p.copy_(start[name])
        for _ in range(2):  # the second step uses the momentum buffer
            optimizer.zero_grad()
            F.cross_entropy(module(x), labels).backward()
            optimizer.step()
        results.append({name: p.detach().clone() for name, p in module.named_parameters()})
    for name, value in results[1].items():
        assert not torch.equal(value, start[name]), name  # every tensor moved
        torch.testing.assert_close(results[0][name], value, rtol=1e-5, atol=1e-7, msg=name)
