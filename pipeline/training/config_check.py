"""The composed training config checked before anything is created: a typo (``optim.lr=-1``,
``data.batch_size=abc``, a data root that does not exist) is refused in about a second with one line naming
the setting, the value and what is allowed, and exit code 2 (``alexnet_common.cli.EXIT_USER_ERROR``), before
the tracking store is opened or a run created: no FAILED run in the study's experiment from a typo.

Only settings whose meaning is fixed here are checked; the rest are checked where they are used."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from alexnet_common.redact import redact_uri

TRACKING_SCHEMES = ("sqlite", "http", "https", "postgresql", "mysql", "file", "databricks")


class ConfigError(ValueError):
    """A setting with a value it cannot have: ``setting``, ``value``, ``allowed``."""

    def __init__(self, setting: str, value: Any, allowed: str) -> None:
        self.setting, self.value, self.allowed = setting, value, allowed
        super().__init__(f"{setting}={value!r} is not allowed: {allowed}")


def _number(value: Any, *, integer: bool) -> float | None:
    """``value`` as a number if it is one (an int for ``integer``; bools are not numbers), else None."""
    if isinstance(value, bool):
        return None
    if integer:
        return value if isinstance(value, int) else None
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def _range(
    integer: bool, low: float | None = None, high: float | None = None, *, low_open: bool = False,
    high_open: bool = False, null: bool = False
) -> tuple[Callable[[Any], bool], str]:  # fmt: skip
    kind = "an integer" if integer else "a number"
    bounds = []
    if low is not None:
        bounds.append(f"{'>' if low_open else '>='} {low:g}")
    if high is not None:
        bounds.append(f"{'<' if high_open else '<='} {high:g}")
    allowed = f"{kind} {' and '.join(bounds)}".strip() + (" or null" if null else "")

    def ok(value: Any) -> bool:
        if value is None:
            return null
        number = _number(value, integer=integer)
        if number is None:
            return False
        above = low is None or (number > low if low_open else number >= low)
        below = high is None or (number < high if high_open else number <= high)
        return above and below

    return ok, allowed


def _one_of(*choices: Any) -> tuple[Callable[[Any], bool], str]:
    return (lambda value: value in choices), "one of " + ", ".join(str(choice) for choice in choices)


def _boolean() -> tuple[Callable[[Any], bool], str]:
    return (lambda value: isinstance(value, bool)), "true or false"


# setting -> (test, what is allowed); settings missing from a config (another data module) are skipped.
RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "seed": _range(True, 0),
    "data.batch_size": _range(True, 1),
    "data.val_batch_size": _range(True, 1, null=True),
    "data.num_workers": _range(True, 0),
    "data.shuffle_buffer": _range(True, 1),
    "data.pca_lighting": _range(False, 0),
    "data.train_samples": _range(True, 1),
    "data.val_samples": _range(True, 1),
    "optim.lr": _range(False, 0, low_open=True),
    "optim.momentum": _range(False, 0, 1, high_open=True),
    "optim.weight_decay": _range(False, 0),
    "optim.lr_factor": _range(False, 0, 1, low_open=True, high_open=True),
    "optim.lr_patience": _range(True, 0),
    "optim.max_lr_drops": _range(True, 0),
    "optim.decay_biases": _boolean(),
    "model.width": _range(False, 0, low_open=True),
    "model.dropout": _range(False, 0, 1, high_open=True),
    "model.groups": _one_of(1, 2),
    "model.pool": _one_of("overlap", "non_overlap"),
    "model.lrn": _boolean(),
    "trainer.max_epochs": _range(True, -1),
    "trainer.max_steps": _range(True, -1),
    "trainer.num_nodes": _range(True, 1),
    "trainer.log_every_n_steps": _range(True, 1),
    "trainer.num_sanity_val_steps": _range(True, -1),
    "logger.flush_timeout_s": _range(False, 0),
    "logger.stop_flush_timeout_s": _range(False, 0),
    "logger.system_metrics_interval_s": _range(False, 0),
}


def _lookup(cfg: DictConfig, setting: str) -> tuple[bool, Any]:
    node = OmegaConf.select(cfg, setting, default=KeyError, throw_on_missing=False)
    return node is not KeyError, node


def _check_in_size(cfg: DictConfig) -> None:
    found, size = _lookup(cfg, "model.in_size")
    number = _number(size, integer=True)
    if found and (number is None or number < 11 or (number - 11) % 4):
        raise ConfigError("model.in_size", size, "an integer 4k + 11 (the paper's 227, 223, ...)")


def _check_paths(cfg: DictConfig) -> None:
    target = str(OmegaConf.select(cfg, "data._target_", default=""))
    if target.endswith("ShardDataModule"):
        root = OmegaConf.select(cfg, "data.root", default=None, throw_on_missing=False)
        if root is None or not Path(str(root)).is_dir():
            raise ConfigError(
                "data.root", root, "an existing directory holding the prep output (manifest.json)"
            )
        if not (Path(str(root)) / "manifest.json").is_file():
            raise ConfigError("data.root", root, "a prep output directory: it has no manifest.json")
    uri = OmegaConf.select(cfg, "logger.tracking_uri", default=None)
    if uri is not None:
        scheme = str(uri).split("://", 1)[0] if "://" in str(uri) else ""
        if scheme.split("+", 1)[0] not in TRACKING_SCHEMES:
            raise ConfigError(
                "logger.tracking_uri", redact_uri(str(uri)), "a URI: " + ", ".join(TRACKING_SCHEMES)
            )
    for name, what in (("ckpt_path", "checkpoint"), ("logger.credentials_file", "credentials")):
        path = OmegaConf.select(cfg, name, default=None)
        if path is not None and not Path(str(path)).is_file():
            raise ConfigError(name, path, f"an existing {what} file, or null")


def check_config(cfg: DictConfig) -> None:
    """Raises :class:`ConfigError` for the first setting of ``cfg`` outside what it allows."""
    for setting, (ok, allowed) in RULES.items():
        found, value = _lookup(cfg, setting)
        if found and not ok(value):
            raise ConfigError(setting, value, allowed)
    _check_in_size(cfg)
    _check_paths(cfg)
