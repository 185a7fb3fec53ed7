"""Prompt parsing."""

import pytest

from diffusion.datasets import DataSpec
from diffusion.prompts import parse_prompt

DIGITS, FASHION = list(DataSpec.of("mnist").classes), list(DataSpec.of("fashion").classes)


@pytest.mark.parametrize("text,expected", [("seven", 7), ("7", 7), ("Seven", 7), (" SEVEN ", 7), ("zero", 0), (3, 3)])
def test_digit_prompts(text, expected):
    assert parse_prompt(text, DIGITS) == expected


@pytest.mark.parametrize("text,expected", [("sneaker", 7), ("Sneaker", 7), ("ankle boot", 9), ("Ankle-Boot", 9),
                                           ("t-shirt", 0), ("top", 0), ("T-shirt/top", 0), ("7", 7), ("bag", 8)])
def test_fashion_prompts(text, expected):
    assert parse_prompt(text, FASHION) == expected


@pytest.mark.parametrize("names,text", [(DIGITS, "sneaker"), (DIGITS, "10"), (FASHION, "seven"), (DIGITS, "")])
def test_unknown_prompt_lists_the_valid_ones(names, text):
    with pytest.raises(ValueError, match="valid prompts: 0/"):
        parse_prompt(text, names)
