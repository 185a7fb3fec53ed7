"""Text prompts to class indices: "7", "seven", "Seven", "sneaker", "ankle boot"."""

from __future__ import annotations

import re
from collections.abc import Sequence

DIGIT_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def _norm(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def class_aliases(class_names: Sequence[str]) -> dict[str, int]:
    """Every accepted spelling -> class index: the index itself, the class name and its '/'-separated parts."""
    aliases: dict[str, int] = {}
    for i, name in enumerate(class_names):
        aliases[str(i)] = i
        for part in [name, *name.split("/")]:
            aliases[_norm(part)] = i
        if len(class_names) == 10 and _norm(name) in DIGIT_WORDS + [str(d) for d in range(10)]:
            aliases[DIGIT_WORDS[i]] = i
    return aliases


def parse_prompt(text: str, class_names: Sequence[str]) -> int:
    """Class index for a prompt; ValueError listing the valid prompts if none matches."""
    aliases = class_aliases(class_names)
    key = _norm(str(text))
    if key in aliases:
        return aliases[key]
    valid = ", ".join(f"{i}/{n}" for i, n in enumerate(class_names))
    raise ValueError(f"unknown prompt {text!r}; valid prompts: {valid}")
