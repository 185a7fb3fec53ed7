"""W&B's offline run files read back for the tests: the records of a `run-<id>.wandb` file as wandb's own protobuf
messages, so a test sees exactly what a run logged (history, summary, config, artifacts).

Hand-written because wandb 0.31 ships no reader in Python any more (its Go core reads them): the file is the
LevelDB log format (a 7-byte header, then 32 KiB blocks of records: 4-byte checksum, 2-byte length, 1-byte type:
full / first / middle / last piece), each record a serialized `wandb_internal.Record`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wandb.proto import wandb_internal_pb2 as pb

BLOCK, HEADER = 32768, 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: str | Path) -> Iterator[Any]:
    """Every record of a .wandb file, in order."""
    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    i, chunk = HEADER, b""
    while i + HEADER <= len(data):
        left = BLOCK - i % BLOCK
        if left < HEADER:  # a block's tail too short for a record header is padding
            i += left
            continue
        length, kind = int.from_bytes(data[i + 4:i + 6], "little"), data[i + 6]
        if i + HEADER + length > len(data):
            return  # a record still being written (a running run's file)
        payload = data[i + HEADER:i + HEADER + length]
        i += HEADER + length
        if kind in (FULL, FIRST):
            chunk = payload
        elif kind in (MIDDLE, LAST):
            chunk += payload
        else:
            return  # zero-filled space after the last record
        if kind in (FULL, LAST):
            record = pb.Record()
            record.ParseFromString(chunk)
            yield record


def _key(item: Any) -> str:
    return "/".join(item.nested_key) if item.nested_key else item.key


@dataclass
class RunFile:
    """What one offline run file holds: the run record, history rows, summary, config and artifacts."""

    path: Path
    run: Any = None
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    artifacts: list[Any] = field(default_factory=list)

    @classmethod
    def read(cls, path: str | Path) -> RunFile:
        out = cls(Path(path))
        for r in records(path):
            kind = r.WhichOneof("record_type")
            if kind == "run":
                out.run = r.run
                out.config.update({_key(u): json.loads(u.value_json) for u in r.run.config.update})
            elif kind == "config":
                out.config.update({_key(u): json.loads(u.value_json) for u in r.config.update})
            elif kind == "history":
                out.history.append({_key(u): json.loads(u.value_json) for u in r.history.item})
            elif kind == "summary":
                out.summary.update({_key(u): json.loads(u.value_json) for u in r.summary.update if _key(u)})
            elif kind == "artifact":
                out.artifacts.append(r.artifact)
        return out

    @property
    def steps(self) -> list[int]:
        """The history rows' steps, in order."""
        return [row["_step"] for row in self.history]


def run_files(root: str | Path, run_id: str = "*") -> list[RunFile]:
    """Every offline run file under root (of one run id), oldest first: a resumed run's attempts in the order they
    ran. An attempt killed before W&B flushed anything holds no record (no `run`)."""
    return [RunFile.read(p) for p in sorted(Path(root).glob(f"**/wandb/offline-run-*-{run_id}/run-{run_id}.wandb"),
                                            key=lambda p: p.parent.name)]


# What W&B's runs table can sort and filter by (issue 49); W&B's own keys start with "_"
WANDB_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(/[A-Za-z_][A-Za-z0-9_]*)*")


def keys_of(run: RunFile) -> set[str]:
    """Every history and summary key a run file holds, W&B's own (`_step`, `_runtime`, …) aside."""
    return {k for row in [*run.history, run.summary] for k in row if not k.startswith("_")}
