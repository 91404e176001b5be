"""run_prep: source layout -> shuffled shard plans -> shards written by a pool of workers -> manifest.json.

Every decision that shapes the output (which sample goes in which shard, in what order) is made here, in the
parent, before any worker starts: sorted references, a seeded permutation of the train set, fixed-size cuts.
Workers only turn one planned shard into bytes, so the output cannot depend on ``workers`` or on how often a
run was interrupted (finished shards are verified and kept, the rest redone).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from rich.console import Console

from data_prep import labels as labels_mod
from data_prep.execute import SPLITS, execute_plans
from data_prep.images import DEFAULT_MAX_PIXELS, validate_resize
from data_prep.manifest import MANIFEST_NAME, ClassInfo, Manifest, SplitInfo, save_manifest
from data_prep.prep_state import PREP_STATE_DIR, SIDECAR_SUFFIX
from data_prep.report import print_summary
from data_prep.shards import ShardTask
from data_prep.sources import SampleRef, SourceLayout, find_layout, layout_classes, scan_split
from data_prep.stats import PixelSums, finalize

DEFAULT_STATS_SAMPLES = 10_000


def check_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise PermissionError(
            f"out={out} is not writable ({exc.strerror or exc}); set out= to a folder you can write to"
        ) from exc


def _validate(resize: str, quality: int, shard_samples: int, splits: Sequence[str]) -> None:
    validate_resize(resize)
    if not 1 <= quality <= 100:
        raise ValueError(f"quality={quality} is outside 1..100; set quality=90 (the default)")
    if shard_samples < 1:
        raise ValueError(f"shard_samples={shard_samples} must be at least 1; set shard_samples=1000")
    unknown = [s for s in splits if s not in SPLITS]
    if unknown or not splits:
        raise ValueError(
            f"splits={list(splits)} must be a non-empty subset of {list(SPLITS)}; set splits=[train,val]"
        )


def _label_val(refs: list[SampleRef], layout: SourceLayout, val_labels: Path | None) -> list[SampleRef]:
    """Attaches wnids to a flat val folder or the val archive from the devkit / LOC label files."""
    if val_labels is not None:
        mapping = labels_mod.load_labels_file(val_labels)
    else:
        search = [layout.root] + (
            [layout.val.parent] if layout.val and layout.val.parent != layout.root else []
        )
        found = labels_mod.find_val_labels(search)
        if found is None:
            raise FileNotFoundError(
                f"no val labels beside {layout.val}: put {labels_mod.LOC_SOLUTION} or the devkit's "
                f"{labels_mod.GROUND_TRUTH} + {labels_mod.META} in {layout.root}, or set val_labels=PATH"
            )
        mapping = found
    return [SampleRef(r.key, mapping.get(r.key), r.path, r.offset, r.size, r.source) for r in refs]


def ordered_refs(refs: list[SampleRef], split: str, seed: int) -> list[SampleRef]:
    """Sorted by key (the same order for every layout), then for train a seeded global permutation."""
    refs = sorted(refs, key=lambda r: (r.key, r.source))
    for a, b in zip(refs, refs[1:], strict=False):
        if a.key == b.key:
            raise ValueError(
                f"{a.source} and {b.source} have the same name {a.key!r}, which would merge them in a shard; "
                f"rename or remove one"
            )
    if split != "train":
        return refs
    order = np.random.default_rng(seed).permutation(len(refs))
    return [refs[i] for i in order]


def _class_indices(refs: list[SampleRef], class_index: dict[str, int], split: str) -> list[int]:
    indices = []
    for ref in refs:
        if ref.wnid is None:
            indices.append(-1)  # unlabelled val file: rejected by the plan, not fatal
            continue
        if ref.wnid not in class_index:
            raise ValueError(
                f"{split} sample {ref.source} is labelled {ref.wnid}, which is not a class of the train set; "
                f"use the label file that matches this ImageNet release (or add the class folder to train/)"
            )
        indices.append(class_index[ref.wnid])
    return indices


def plan_shards(
    split: str, refs: list[SampleRef], labels: list[int], out: Path, *, shard_samples: int, settings: dict
) -> Iterator[ShardTask]:
    stats_left = settings["stats_samples"] if split == "train" else 0
    for index, start in enumerate(range(0, len(refs), shard_samples)):
        chunk = slice(start, start + shard_samples)
        count = len(refs[chunk])
        yield ShardTask(
            split=split,
            index=index,
            out=out,
            refs=refs[chunk],
            labels=labels[chunk],
            resize=settings["resize"],
            quality=settings["quality"],
            max_pixels=settings["max_pixels"],
            stats_count=max(0, min(count, stats_left - start)),
        )


def _remove_stale(out: Path, split: str, shard_count: int) -> None:
    """Temp files of killed runs, and shards and sidecars beyond this plan (left by a run with other
    settings), in the shard folder and in the prep-state folder."""
    for folder in (out / split, out / PREP_STATE_DIR / split):
        if folder.is_dir():
            _remove_stale_in(folder, split, shard_count)


def _remove_stale_in(folder: Path, split: str, shard_count: int) -> None:
    for path in folder.iterdir():
        name = path.name
        if name.startswith(".") and name.endswith(".tmp"):
            path.unlink(missing_ok=True)
        elif name.startswith(f"{split}-") and (name.endswith(".tar") or name.endswith(SIDECAR_SUFFIX)):
            number = name[len(split) + 1 :].split(".", 1)[0]
            if number.isdigit() and int(number) >= shard_count:
                path.unlink(missing_ok=True)


def _scan(layout: SourceLayout, split: str, val_labels: Path | None) -> list[SampleRef]:
    location = layout.train if split == "train" else layout.val
    if location is None:
        wanted = (
            "train/ or ILSVRC2012_img_train.tar" if split == "train" else "val/ or ILSVRC2012_img_val.tar"
        )
        raise FileNotFoundError(
            f"source {layout.root} has no {wanted}; point source= at the ImageNet folder or set splits= "
            f"to the splits it has"
        )
    refs = scan_split(location, layout.root, split)
    if split == "val" and not layout.val_is_labelled_by_folders:
        refs = _label_val(refs, layout, val_labels)
    if not refs:
        raise ValueError(f"{location} holds no images; point source= at a complete ImageNet copy")
    return refs


def run_prep(
    source: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    workers: int | None = None,
    resize: str = "paper",
    shard_samples: int = 1000,
    quality: int = 90,
    seed: int = 0,
    splits: Sequence[str] = SPLITS,
    strict: bool = False,
    val_labels: str | os.PathLike[str] | None = None,
    progress: bool = True,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    stats_samples: int = DEFAULT_STATS_SAMPLES,
) -> Manifest:
    """Shards ``source`` (class folders or the official archives) into ``out``; resumes an interrupted run.

    Raises ValueError / FileNotFoundError / PermissionError with one line naming the path and the fix.
    """
    splits = tuple(splits)
    _validate(resize, quality, shard_samples, splits)
    workers = workers or os.cpu_count() or 1
    source_path, out_path = Path(source).expanduser().resolve(), Path(out).expanduser().resolve()
    labels_path = Path(val_labels).expanduser().resolve() if val_labels else None
    layout = find_layout(source_path)
    wnids = layout_classes(layout)
    if not wnids:
        raise ValueError(
            f"source {source_path} has no class folders in train/ (nor a train archive); cannot index classes"
        )
    class_index = {w: i for i, w in enumerate(wnids)}
    settings = {
        "resize": resize,
        "quality": quality,
        "seed": seed,
        "shard_samples": shard_samples,
        "splits": list(splits),
        "max_pixels": max_pixels,
        "stats_samples": stats_samples,
    }
    plans = {}
    for split in splits:
        refs = ordered_refs(_scan(layout, split, labels_path), split, seed)
        plans[split] = (refs, _class_indices(refs, class_index, split))
    check_writable(out_path)
    (out_path / MANIFEST_NAME).unlink(missing_ok=True)  # a half-redone output must not look finished
    for split, (refs, _) in plans.items():
        _remove_stale(out_path, split, -(-len(refs) // shard_samples))
    tasks = (
        task
        for split, (refs, labels) in plans.items()
        for task in plan_shards(split, refs, labels, out_path, shard_samples=shard_samples, settings=settings)
    )
    totals = {split: len(refs) for split, (refs, _) in plans.items()}
    results = execute_plans(tasks, totals, workers=workers, show=progress)
    manifest = _build_manifest(out_path, wnids, layout, plans, results, settings)
    if strict and manifest.rejected:
        first = manifest.rejected[0]
        raise ValueError(
            f"strict=true and {len(manifest.rejected)} inputs were rejected (first: {first['source']}: "
            f"{first['reason']}); fix or remove them, or run with strict=false"
        )
    save_manifest(manifest)
    if progress:
        print_summary(Console(stderr=True), manifest, {s: sum(r.reused for r in results[s]) for s in results})
    return manifest


def _build_manifest(
    out: Path, wnids: list[str], layout: SourceLayout, plans, results, settings: dict
) -> Manifest:
    names = labels_mod.class_names(wnids, [layout.root])
    total = PixelSums()
    for result in results.get("train", []):
        total.merge(result.sums)
    return Manifest(
        root=out,
        classes=[ClassInfo(i, w, n) for i, (w, n) in enumerate(zip(wnids, names, strict=True))],
        splits={
            split: SplitInfo(
                samples=sum(r.info.samples for r in results[split]), shards=[r.info for r in results[split]]
            )
            for split in plans
        },
        stats=finalize(total),
        settings=settings,
        rejected=[reject for split in plans for r in results[split] for reject in r.rejected],
    )
