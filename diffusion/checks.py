"""Option checks shared by train.py, sample.py and the demo: one function per rule, one clear line per failure."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

SEED_BITS = {"train": 32, "sample": 64}  # Lightning seeds numpy (32-bit); sampling seeds torch generators (64-bit)


class ConfigError(ValueError):
    """An option has an invalid value."""


PUBLISHED = "published"  # eval.inception=published: the standard FID only where the seed paper has a figure


def is_number(value: Any) -> bool:
    """A real int or float (not a bool, not a string)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_guidance(value: Any, key: str = "guidance", minimum: float = -1.0) -> float:
    """ω: a finite number ≥ minimum (ω = −1 is unconditional sampling; training runs use ω ≥ 0)."""
    hint = " (-1: unconditional)" if minimum == -1 else ""
    if not is_number(value) or not math.isfinite(value) or value < minimum:
        raise ConfigError(f"{key} (ω) must be a number ≥ {minimum:g}{hint}, got {value!r}")
    return float(value)


def check_seed(value: Any, use: str, key: str = "seed") -> int:
    """A seed that the random number generators of `use` ("train" or "sample") accept."""
    bits = SEED_BITS[use]
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**bits:
        raise ConfigError(f"{key} must be an integer in [0, 2^{bits} - 1], got {value!r}")
    return value


def check_integer(value: Any, key: str, minimum: int = 0) -> int:
    """An integer option ≥ minimum (sizes, counts)."""
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigError(f"{key} must be an integer ≥ {minimum}, got {value!r}")
    return value


def check_positive(value: Any, key: str) -> float:
    """A finite number > 0 (learning rates, scales)."""
    if not is_number(value) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{key} must be a number > 0, got {value!r}")
    return float(value)


def check_steps(steps: Any, timesteps: int, key: str = "sampler.steps", of: str = "the model's timesteps") -> int:
    """Sampling steps: an integer in [1, T] (any subset of a T-step model's timesteps can be visited)."""
    if not isinstance(steps, int) or isinstance(steps, bool) or not 1 <= steps <= timesteps:
        raise ConfigError(f"{key} must be an integer between 1 and {of} ({timesteps}), got {steps!r}")
    return steps


def check_choice(value: Any, choices: Iterable[str], key: str) -> str:
    """One of a fixed set of names."""
    names = list(choices)
    if value not in names:
        listed = " or ".join(map(repr, names)) if len(names) == 2 else "one of " + ", ".join(map(repr, names))
        raise ConfigError(f"{key} must be {listed}, got {value!r}")
    return value


def check_inception(value: Any) -> bool | str:
    """eval.inception: true, false or "published" (the standard FID only for the settings the seed paper reports)."""
    if isinstance(value, bool) or value == PUBLISHED:
        return value
    raise ConfigError(f"eval.inception must be true, false or {PUBLISHED} (only where the seed paper has a figure), "
                      f"got {value!r}")
