"""Crash-safe file writes (every file the project writes in place: data, checkpoints, samples) and file digests."""

from __future__ import annotations

import contextlib
import hashlib
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object]) -> Path:
    """Write `path` through a temporary file in its own directory, fsync, rename: a reader sees the old file or the
    new one, never a partial one, on any filesystem (the rename never crosses a mount, unlike a $TMPDIR staging).

    The file is created with mode 0666 less the umask (0644 by default), like `open()`, not tempfile's 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable (not possible on every platform)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return path


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file (data verification, evaluator caches, which model made a set of samples)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
