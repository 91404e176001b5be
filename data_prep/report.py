"""What a prep run shows its user: a progress bar with images/s, and the end summary per split."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from data_prep.manifest import Manifest


class ImagesPerSecondColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("? img/s" if speed is None else f"{speed:,.0f} img/s", style="progress.data.speed")


def make_progress(console: Console, enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:,}/{task.total:,}"),
        ImagesPerSecondColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not enabled,
        # images/s over the last 30 s: shards finish in bursts, a short window would jump
        speed_estimate_period=30.0,
    )


def summary_table(manifest: Manifest, reused: dict[str, int]) -> Table:
    table = Table(title=f"shards in {manifest.root}")
    for column in ("split", "images", "shards", "MiB", "rejects", "reused shards"):
        table.add_column(column, justify="left" if column == "split" else "right")
    for name, split in manifest.splits.items():
        rejects = sum(1 for r in manifest.rejected if r["split"] == name)
        size = sum(s.bytes for s in split.shards)
        table.add_row(
            name,
            f"{split.samples:,}",
            f"{len(split.shards):,}",
            f"{size / 2**20:,.1f}",
            f"{rejects:,}",
            f"{reused.get(name, 0):,}",
        )
    return table


def print_summary(console: Console, manifest: Manifest, reused: dict[str, int]) -> None:
    console.print(summary_table(manifest, reused))
    for reject in manifest.rejected[:20]:
        console.print(
            f"  rejected {reject['split']}: {reject['source']}: {reject['reason']}",
            markup=False,
            soft_wrap=True,
        )
    if len(manifest.rejected) > 20:
        console.print(f"  ... and {len(manifest.rejected) - 20} more rejects (all listed in manifest.json)")
    if manifest.stats is not None:
        mean = ", ".join(f"{x:.2f}" for x in manifest.stats.mean)
        console.print(f"train RGB mean [{mean}] over {manifest.stats.samples:,} images")
