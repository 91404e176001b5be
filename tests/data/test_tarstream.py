"""The lean tar reader against webdataset's own (tarfile-based) reader, on every tar format shards use."""

from __future__ import annotations

import io
import tarfile

import pytest
from webdataset.tariterators import group_by_keys, tar_file_expander

from pipeline.data.tarstream import tar_samples

LONG = (
    "a-directory-name-long-enough/" * 5
)  # 145 characters: needs ustar's prefix, a PAX path or a GNU long name


def _tar(tar_format: int, names: list[str], mtime: float = 0) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tar_format) as tar:
        for index, name in enumerate(names):
            data = f"payload {index} of {name}".encode() * (index + 1) * 40
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), mtime
            tar.addfile(info, io.BytesIO(data))
        directory = tarfile.TarInfo("adir")
        directory.type = tarfile.DIRTYPE
        tar.addfile(directory)
    return out.getvalue()


def _webdataset(data: bytes) -> list[dict]:
    members = tar_file_expander([{"url": "shard.tar", "stream": io.BytesIO(data)}])
    return list(group_by_keys(members))


NAMES = ["s0.jpg", "s0.cls", "s0.json", "s1.jpg", "s1.cls", "Dir/s2.seg.png", "Dir/s2.JPG", "s3.cls"]


@pytest.mark.parametrize(
    ("tar_format", "mtime", "names"),
    [
        (tarfile.USTAR_FORMAT, 0, NAMES),  # what data_prep writes
        (tarfile.USTAR_FORMAT, 0, [LONG[:120] + "x.jpg", LONG[:120] + "x.cls"]),  # ustar prefix field
        (tarfile.PAX_FORMAT, 1.5, NAMES),  # webdataset's TarWriter default: a PAX header for the float mtime
        (tarfile.PAX_FORMAT, 0, [LONG + "x.jpg", LONG + "x.cls", "é-ü.jpg"]),  # PAX path records, UTF-8
        (tarfile.GNU_FORMAT, 0, [LONG + "x.jpg", LONG + "x.cls", "y.jpg"]),  # GNU long names
    ],
)
def test_samples_equal_webdatasets_reader(tar_format, mtime, names):
    data = _tar(tar_format, names, mtime)
    ours = list(tar_samples(io.BytesIO(data), "shard.tar"))
    assert ours == _webdataset(data)
    assert len(ours) == len({name.split(".")[0] for name in names})


def test_damaged_header_and_truncated_data_raise_read_errors():
    data = bytearray(_tar(tarfile.USTAR_FORMAT, NAMES))
    data[600] ^= 0xFF  # inside the first member's data: no header touched, still readable
    assert len(list(tar_samples(io.BytesIO(bytes(data)), "x.tar"))) == 4
    damaged = bytearray(data)
    damaged[5] ^= 0xFF  # the first header's name: checksum mismatch
    with pytest.raises(tarfile.ReadError, match="bad tar header checksum in x.tar"):
        list(tar_samples(io.BytesIO(bytes(damaged)), "x.tar"))
    with pytest.raises(tarfile.ReadError, match="unexpected end of data in x.tar"):
        list(tar_samples(io.BytesIO(bytes(data[:700])), "x.tar"))  # inside a member's data
    with pytest.raises(tarfile.ReadError, match="unexpected end of data in x.tar"):
        list(tar_samples(io.BytesIO(bytes(data[:300])), "x.tar"))  # inside a header
