"""Damaged shards: every kind of damage ends as skipped-and-counted samples (or the rest of the shard), never
as an exception; the count reaches MLflow as ``data/skipped_samples`` and a warning names the shard.

The cases damage copies of a real demo shard (data_prep's bytes: ustar members, JPEGs, class labels) cut to
its first samples, and of a PAX-format shard: every header field (garbage, non-octal digits, all-0xFF, all
zero, non-UTF-8 names; with the header checksum left wrong and recomputed, so the field itself is parsed),
PAX records, truncation at random offsets, random bytes anywhere. Each case reads the shard as a worker does
(tar -> samples -> decode + crop) and asserts that every sample is either delivered or counted.
"""

from __future__ import annotations

import io
import logging
import random
import shutil
import tarfile
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from pipeline.data.spans import SkipCounter, Span, _read_spans
from pipeline.data.tarstream import BLOCK, tar_members
from pipeline.data.transforms import CorruptSampleError, TrainCrop, sample_draws
from pipeline.tracking import keys
from pipeline.train import train
from tests.helpers.training import compose_train, shard_overrides

SAMPLES = 8  # samples kept of the demo shard: 24 members
CROP, CLASSES = 227, 10
FIELDS = {  # ustar header fields: (offset, length)
    "name": (0, 100), "mode": (100, 8), "uid": (108, 8), "gid": (116, 8), "size": (124, 12),
    "mtime": (136, 12), "chksum": (148, 8), "typeflag": (156, 1), "linkname": (157, 100),
    "magic": (257, 6), "version": (263, 2), "uname": (265, 32), "gname": (297, 32),
    "devmajor": (329, 8), "devminor": (337, 8), "prefix": (345, 155), "pad": (500, 12),
}  # fmt: skip


def _cut(shard: bytes, samples: int) -> tuple[bytes, list[int]]:
    """The shard's first ``samples`` samples as a complete tar (end blocks added) and its members' offsets."""
    stream, headers, keys = io.BytesIO(shard), [], []
    while True:
        offset = stream.tell()
        header = stream.read(BLOCK)
        key = tarfile.TarInfo.frombuf(header, "utf-8", "surrogateescape").name.split(".")[0]
        if key not in keys and len(keys) == samples:
            return shard[:offset] + bytes(2 * BLOCK), headers
        keys += [key] if key not in keys else []
        headers.append(offset)
        size = int(header[124:136].split(b"\0")[0].strip() or b"0", 8)
        stream.seek(size + (-size % BLOCK), io.SEEK_CUR)


def _fix_checksum(data: bytearray, header: int) -> None:
    block = data[header : header + BLOCK]
    block[148:156] = b" " * 8
    data[header + 148 : header + 156] = b"%06o\0 " % sum(block)


def _read(path: Path, samples: int) -> tuple[int, int]:
    """(samples decoded, samples counted as skipped) reading ``path`` as a train worker does."""
    counter = SkipCounter(1)
    handler, crop, decoded = counter.handler(0), TrainCrop(CROP, num_classes=CLASSES), 0
    for index, sample in enumerate(_read_spans([Span(str(path), 0, samples)], handler)):
        try:
            crop(sample, sample_draws(0, index))
            decoded += 1
        except CorruptSampleError as error:
            handler(error)
    return decoded, counter.total


def _header_cases(headers: list[int]) -> list[tuple[str, int, str, bool]]:
    members = [0, len(headers) // 2, len(headers) - 1]
    kinds = ["garbage", "non-octal", "ff", "zero", "non-utf8"]
    return [
        (field, member, kind, fix)
        for field in FIELDS
        for member in members
        for kind in kinds
        for fix in (False, True)
    ]


def _damage_field(data: bytearray, header: int, field: str, kind: str, rng: random.Random) -> None:
    offset, length = FIELDS[field]
    start = header + offset
    if kind == "garbage":
        data[start : start + length] = rng.randbytes(length)
    elif kind == "non-octal":
        data[start : start + length] = (b"9Z8-" * 40)[:length]
    elif kind == "ff":
        data[start : start + length] = b"\xff" * length
    elif kind == "zero":
        data[start : start + length] = bytes(length)
    else:
        data[start : start + min(length, 4)] = b"\xc3\x28\xa0\xa1"[: min(length, 4)]


@pytest.fixture(scope="module")
def real_shard(demo_shards) -> tuple[bytes, list[int]]:
    return _cut((demo_shards / "train" / "train-000000.tar").read_bytes(), SAMPLES)


@pytest.fixture(scope="module")
def pax_shard(real_shard) -> tuple[bytes, list[int]]:
    """The same samples re-written as a PAX tar with long names (a PAX header before every member)."""
    out = io.BytesIO()
    with (
        tarfile.open(fileobj=io.BytesIO(real_shard[0])) as source,
        tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for member in source.getmembers():
            data = source.extractfile(member).read()
            member.name = "d" * 90 + "/" + "é" * 20 + "/" + member.name
            tar.addfile(member, io.BytesIO(data))
    return out.getvalue(), []


def test_the_reader_reads_both_undamaged_shards_whole(real_shard, pax_shard, tmp_path):
    for name, (data, _) in {"ustar": real_shard, "pax": pax_shard}.items():
        (tmp_path / name).write_bytes(data)
        assert _read(tmp_path / name, SAMPLES) == (SAMPLES, 0)


def test_every_damage_is_skipped_and_counted_never_raised(real_shard, pax_shard, tmp_path, caplog):
    rng = random.Random(9)
    shard, headers = real_shard
    cases: list[tuple[str, bytes]] = []
    for field, member, kind, fix in _header_cases(headers):
        data = bytearray(shard)
        _damage_field(data, headers[member], field, kind, rng)
        if fix:
            _fix_checksum(data, headers[member])
        cases.append(
            (f"{field} of member {member}: {kind}, checksum {'fixed' if fix else 'wrong'}", bytes(data))
        )
    pax = pax_shard[0]
    pax_headers = [at for at in range(0, len(pax) - BLOCK, BLOCK) if pax[at + 156 : at + 157] == b"x"]
    for case in range(60):  # PAX records: random bytes in an extended header's data, checksum untouched
        data = bytearray(pax)
        header = rng.choice(pax_headers)
        for _ in range(rng.randint(1, 4)):
            data[header + BLOCK + rng.randrange(BLOCK)] = rng.randrange(256)
        cases.append((f"PAX record damage {case}", bytes(data)))
    for case in range(60):
        cases.append((f"truncated {case}", shard[: rng.randrange(len(shard))]))
    for case in range(150):
        data = bytearray(shard if case % 3 else pax)
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        cases.append((f"random bytes {case}", bytes(data)))

    path = tmp_path / "damaged.tar"
    with caplog.at_level(logging.ERROR, logger="pipeline.data"):  # the warnings: the next test
        for what, data in cases:
            path.write_bytes(data)
            decoded, skipped = _read(path, SAMPLES)  # raising would fail the test here
            assert decoded + skipped >= SAMPLES, f"{what}: {decoded} decoded + {skipped} counted"
    assert len(cases) >= 600


def test_header_damage_is_reported_naming_the_shard(real_shard, tmp_path, caplog):
    shard, headers = real_shard
    data = bytearray(shard)
    data[headers[3] + 124 : headers[3] + 136] = b"12x45678901\0"  # the ValueError that used to kill a run
    _fix_checksum(data, headers[3])
    path = tmp_path / "train-000042.tar"
    path.write_bytes(data)
    with caplog.at_level(logging.WARNING, logger="pipeline.data"):
        assert _read(path, SAMPLES) == (1, SAMPLES - 1)
    assert "bad tar header size field" in caplog.text and "train-000042.tar" in caplog.text
    with pytest.raises(tarfile.ReadError):
        list(tar_members(io.BytesIO(bytes(data)), "x.tar"))


def test_skipped_samples_reach_mlflow_and_a_warning_names_the_shard(
    demo_shards, tmp_path, mlflow_uri, caplog
):
    shards = tmp_path / "shards"
    shutil.copytree(demo_shards, shards)
    for victim in (shards / "train").glob("*.tar"):  # the last tenth of every train shard is lost
        victim.write_bytes(victim.read_bytes()[: len(victim.read_bytes()) * 9 // 10])
    # data.verify=off: the reader's own damage handling is under test (checked, every shard would be skipped)
    overrides = [*shard_overrides(shards, tmp_path / "out", mlflow_uri, "damaged"), "data.verify=off"]
    cfg = compose_train(overrides)
    with caplog.at_level(logging.WARNING, logger="pipeline.data"):
        result = train(cfg)
    history = MlflowClient(mlflow_uri).get_metric_history(result["run_id"], keys.SKIPPED_SAMPLES)
    assert history and max(metric.value for metric in history) > 0
    assert "unexpected end of data in" in caplog.text and "/train/train-0000" in caplog.text
