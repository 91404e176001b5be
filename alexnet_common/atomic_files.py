"""Atomic file writes (temporary name in the same folder, fsync, rename), for data_prep and pipeline alike:
a reader never sees half a file, and a crash leaves at most a temporary file, never a damaged output."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates 0600 files; finished outputs get the permissions any new file would have (0644 usually)
FILE_MODE = 0o666 & ~_read_umask()


@contextmanager
def atomic_file(path: Path, mode: str = "w") -> Iterator[IO]:
    """A file written under a temporary name in the same directory, fsynced, then renamed over ``path``:
    readers never see half a file, and a crash leaves only a temporary file (removed on the next run)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, data: Any) -> None:
    with atomic_file(path) as stream:
        json.dump(data, stream, indent=1, sort_keys=False)
        stream.write("\n")


def write_text_atomic(path: Path, text: str) -> Path:
    with atomic_file(path) as stream:
        stream.write(text)
    return path
