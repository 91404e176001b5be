"""``python -m data_prep.verify out=PATH``: re-reads every shard and checks it against manifest.json.

Per shard: present, byte count, sha256, and the number of samples (distinct keys, each with jpg, cls and
json). Exit 0 when all match; exit 1 naming each mismatching shard; exit 2 when there is no
manifest to check against.
"""

from __future__ import annotations

import sys
import tarfile
from pathlib import Path

from alexnet_common.cli import REQUIRED, fail, parse_overrides
from data_prep.manifest import SAMPLE_MEMBERS, Manifest, ShardInfo, load_manifest
from data_prep.shards import file_sha256


def _count_samples(path: Path) -> tuple[int, str | None]:
    """Distinct keys in the tar, and a problem if a sample lacks one of its members."""
    members: dict[str, set[str]] = {}
    with tarfile.open(path, mode="r:") as tar:
        for info in tar:
            key, _, extension = info.name.partition(".")
            members.setdefault(key, set()).add(extension)
    for key, extensions in members.items():
        if extensions != set(SAMPLE_MEMBERS):
            return len(
                members
            ), f"sample {key!r} has members {sorted(extensions)}, expected {list(SAMPLE_MEMBERS)}"
    return len(members), None


def check_shard(root: Path, shard: ShardInfo) -> str | None:
    """None when the shard matches the manifest, else one line naming the shard and what differs."""
    path = root / shard.name
    if not path.is_file():
        return f"{shard.name}: missing"
    size = path.stat().st_size
    if size != shard.bytes:
        return f"{shard.name}: {size} bytes, manifest says {shard.bytes}"
    sha256 = file_sha256(path)
    if sha256 != shard.sha256:
        return f"{shard.name}: sha256 {sha256[:16]}..., manifest says {shard.sha256[:16]}..."
    try:
        samples, problem = _count_samples(path)
    except tarfile.TarError as exc:
        return f"{shard.name}: not a readable tar ({exc})"
    if problem:
        return f"{shard.name}: {problem}"
    if samples != shard.samples:
        return f"{shard.name}: {samples} samples, manifest says {shard.samples}"
    return None


def verify_shards(manifest: Manifest) -> list[str]:
    """Every problem found, one line each (empty: the shards are exactly what the manifest describes)."""
    problems = []
    for name, split in manifest.splits.items():
        for shard in split.shards:
            problem = check_shard(manifest.root, shard)
            if problem:
                problems.append(problem)
        total = sum(s.samples for s in split.shards)
        if total != split.samples:
            problems.append(f"split {name}: shards hold {total} samples, manifest says {split.samples}")
    return problems


def main(argv: list[str] | None = None) -> None:
    program = "python -m data_prep.verify"
    args = parse_overrides(
        program,
        sys.argv[1:] if argv is None else argv,
        {"out": (Path, REQUIRED, "prep output folder (holding manifest.json)")},
    )
    try:
        manifest = load_manifest(args["out"])
    except (FileNotFoundError, ValueError) as exc:
        fail(program, str(exc))
    problems = verify_shards(manifest)
    shards = sum(len(s.shards) for s in manifest.splits.values())
    for problem in problems:
        print(f"MISMATCH {problem}", file=sys.stderr)
    if problems:
        print(
            f"{len(problems)} of {shards} shards in {manifest.root} do not match manifest.json; "
            f"rerun data_prep "
            f"with the same settings to rewrite them",
            file=sys.stderr,
        )
        sys.exit(1)
    print(f"ok: {shards} shards in {manifest.root} match manifest.json")


if __name__ == "__main__":
    main()
