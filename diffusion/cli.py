"""Shared entry-point plumbing: expected failures end in one clear line, never a traceback wall."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from diffusion.data import DataMissingError
from diffusion.fetch import DataError
from diffusion.module import NonFiniteLossError

EXPECTED = (ValueError, FileNotFoundError, DataError, DataMissingError, NonFiniteLossError, FloatingPointError)


def run_cli(fn: Callable[..., Any], *args: Any) -> Any:
    """Call fn; on an expected error print `error: <message>` and exit 1 (in a multirun, re-raise for the sweep)."""
    try:
        return fn(*args)
    except EXPECTED as err:
        if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
            raise
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(1) from None
