"""The GPU check (``scripts/gpu_check.sh``): one prepared, time-boxed run of every GPU-only path, one JSON.

Each step is its own module and runs in its own process (``python -m bench.gpu_check STEP ...``), so a step
that hangs or crashes is cut off by the script's time box and the next step still runs. A step returns a
``StepResult``: ``status`` is ``pass``, ``fail`` (it ran and a check did not hold), ``error`` (it did not
finish: the exception, or the time box) or ``skipped: <why>``; ``details`` holds what it measured.
``report`` merges the steps into ``gpu_check.json`` and prints the readable summary.

Written for two environments at once: this project's own (torch 2.14) and a bare GPU machine's (Python 3.12,
torch 2.11, torchvision 0.26, lightning, torchmetrics; Hydra, MLflow and WebDataset carried as wheels built by
``scripts/gpu_wheels.sh``). Nothing here uses an API newer than torch 2.11.
"""
