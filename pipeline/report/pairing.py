"""Which interval a change gets: paired by seed where the design pairs the runs, else Welch's, and why.

Two arms are pairs by construction (common random numbers) when, seed by seed, they start from the same
initial weights and see the same data stream: the runs record both as tags (``crn_init``, ``crn_data``,
written by ``pipeline.training.crn``), so the report reads the guarantee from the runs instead of assuming it
per experiment. An arm that changes a parameter shape (``one_gpu_half``) has another ``crn_init``; one that
changes the data stream has another ``crn_data``. Pairing also needs the same seed set in both arms, each
seed once. ``interval="welch"`` asks for Welch's interval whatever the design.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.report.runs import TrainingRun

INTERVALS = ("auto", "welch")  # compare interval=: paired where the design pairs the runs, or always Welch
PAIRED = "paired"
WELCH = "welch"


@dataclass(frozen=True)
class Pairing:
    """How an arm is compared with the baseline: ``method`` (paired | welch), why, and the pairs by seed
    (experiment run, baseline run), in seed order; empty for Welch."""

    method: str
    reason: str
    pairs: tuple[tuple[TrainingRun, TrainingRun], ...] = ()


def seed_order(seed: str) -> tuple[int, str]:
    return (int(seed), "") if seed.lstrip("-").isdigit() else (0, seed)


def _seed_list(runs: list[TrainingRun]) -> str:
    return ",".join(sorted({run.seed for run in runs}, key=seed_order)) or "none"


def pair_runs(group: list[TrainingRun], baseline: list[TrainingRun], interval: str = "auto") -> Pairing:
    """Pairs ``group`` with ``baseline`` by seed where common random numbers hold for every pair."""
    if interval not in INTERVALS:
        raise ValueError(f"interval must be one of {', '.join(INTERVALS)} (got {interval!r})")
    if interval == WELCH:
        return Pairing(WELCH, "interval=welch asked for the unpaired reading")
    ours, theirs = {run.seed: run for run in group}, {run.seed: run for run in baseline}
    if len(ours) < len(group) or len(theirs) < len(baseline):
        return Pairing(WELCH, "a seed appears twice in one arm: no one-to-one pairs")
    if set(ours) != set(theirs):
        return Pairing(WELCH, f"seed sets differ ({_seed_list(group)} vs baseline {_seed_list(baseline)})")
    if len(ours) < 2:
        return Pairing(WELCH, "fewer than 2 pairs")
    pairs = tuple((ours[seed], theirs[seed]) for seed in sorted(ours, key=seed_order))
    if any(not run.crn_init or not run.crn_data for pair in pairs for run in pair):
        return Pairing(WELCH, "runs without crn_init/crn_data tags (trained before they were recorded)")
    if any(a.crn_init != b.crn_init for a, b in pairs):
        return Pairing(WELCH, "initial weights differ from the baseline's (crn_init): other parameter shapes")
    if any(a.crn_data != b.crn_data for a, b in pairs):
        return Pairing(WELCH, "data order or augmentation draws differ from the baseline's (crn_data)")
    return Pairing(PAIRED, f"same seeds, common random numbers: {len(pairs)} pairs", pairs)


def lr_drop_mismatches(pairs: tuple[tuple[TrainingRun, TrainingRun], ...]) -> list[str]:
    """Seeds whose two runs dropped the rate at different epochs, as "seed 1: [3] vs [5]" (runs that did not
    record their drops are skipped): an ablation effect the lr policy may have made."""
    found = []
    for ours, base in pairs:
        if ours.lr_drop_epochs is None or base.lr_drop_epochs is None:
            continue
        if ours.lr_drop_epochs != base.lr_drop_epochs:
            found.append(f"seed {ours.seed}: {list(ours.lr_drop_epochs)} vs {list(base.lr_drop_epochs)}")
    return found


def same_seed_pairs(
    group: list[TrainingRun], baseline: list[TrainingRun]
) -> tuple[tuple[TrainingRun, TrainingRun], ...]:
    """The runs of the two arms that share a seed (each seed once in each arm), whatever the interval."""
    ours, theirs = {run.seed: run for run in group}, {run.seed: run for run in baseline}
    return tuple((ours[seed], theirs[seed]) for seed in sorted(set(ours) & set(theirs), key=seed_order))
