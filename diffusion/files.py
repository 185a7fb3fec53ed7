"""Crash-safe file writes (every file the project writes in place: data, checkpoints, samples), file digests, and the
one careful reader of the small JSON records the project reads back (status.json, wandb.json, metrics.json)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

MAX_RECORD_BYTES = 16 * 1024 * 1024  # the largest JSON record read back (a metrics.json is a few tens of kB)


class UnreadableFile(ValueError):
    """A record the project reads back that is not what it writes there: one line naming the file and why."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = Path(path), reason


def read_json_object(path: str | Path) -> dict[str, Any]:
    """A JSON object from `path`: FileNotFoundError if there is none, UnreadableFile for a directory, a file over
    MAX_RECORD_BYTES, bytes that are not UTF-8 JSON (nesting beyond Python's stack included) or another JSON type."""
    path = Path(path)
    if path.is_dir():
        raise UnreadableFile(path, "a directory, not a file")
    if path.stat().st_size > MAX_RECORD_BYTES:
        raise UnreadableFile(path, f"{path.stat().st_size:,} bytes, more than a record of this project holds")
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as err:  # ValueError: JSONDecodeError
        raise UnreadableFile(path, f"not JSON ({type(err).__name__}: {str(err).splitlines()[0][:80]})") from None
    if not isinstance(data, dict):
        raise UnreadableFile(path, f"a JSON {type(data).__name__}, not an object")
    return data


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
