"""``python -m data_prep source=PATH out=PATH [workers=N resize=paper ...]``: a Hydra app (conf/prep.yaml)."""

from __future__ import annotations

import sys

import hydra
from hydra.utils import to_absolute_path
from omegaconf import DictConfig, OmegaConf

from data_prep.prep import run_prep

# One-line, non-zero-exit failures for what a user can fix (paths, settings, label files).
USER_ERRORS = (ValueError, FileNotFoundError, PermissionError, NotADirectoryError, IsADirectoryError)
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130
# The configs as package resources (alexnet_common/conf links to conf/): found the same way from a checkout,
# an editable install and an installed wheel, whatever the working directory or the console script.
CONF_DIR = "pkg://alexnet_common.conf"


def _path(value: str | None) -> str | None:
    # relative to where the user typed the command, even if a launcher config turns hydra.job.chdir on
    return None if value is None else to_absolute_path(str(value))


def prep_from_config(cfg: DictConfig) -> None:
    if cfg.source is None or cfg.out is None:
        raise ValueError("source= and out= are required: python -m data_prep source=PATH out=PATH")
    splits = [cfg.splits] if isinstance(cfg.splits, str) else list(OmegaConf.to_container(cfg.splits))
    run_prep(
        _path(cfg.source),
        _path(cfg.out),
        workers=cfg.workers,
        resize=cfg.resize,
        shard_samples=cfg.shard_samples,
        quality=cfg.quality,
        seed=cfg.seed,
        splits=splits,
        strict=cfg.strict,
        val_labels=_path(cfg.val_labels),
        progress=cfg.progress,
        max_pixels=cfg.max_pixels,
        stats_samples=cfg.stats_samples,
    )


@hydra.main(config_path=CONF_DIR, config_name="prep", version_base="1.3")
def _app(cfg: DictConfig) -> None:
    try:
        prep_from_config(cfg)
    except USER_ERRORS as exc:
        print(f"data_prep: error: {exc}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    except KeyboardInterrupt:
        print(
            "data_prep: interrupted; rerun the same command to resume (finished shards are kept)",
            file=sys.stderr,
        )
        sys.exit(EXIT_INTERRUPTED)


def main() -> None:
    _app()


if __name__ == "__main__":
    main()
