"""One rule for numbers written as text, wherever they come from (API options,
colours, the environment): ASCII digits, at most one decimal point, no sign.

NOTE: int(), float() and the regex \\d accept far more: other scripts' digits
("２５５" and "٢٥٥" are 255), underscores ("1_0" is 10), exponents, "inf" and
"nan". Each gives one value several spellings, and some (full-width digits)
were accepted by one option and refused by the next; none is accepted here.
"""

from __future__ import annotations

import re

# No option or setting needs more digits; int() itself raises on 4300+.
MAX_DIGITS = 18
_WHOLE_NUMBER = re.compile(r"[0-9]+")
_DECIMAL_NUMBER = re.compile(r"[0-9]+(?:\.[0-9]+)?|\.[0-9]+")


def parse_whole_number(text: str) -> int:
    """'42' -> 42; ValueError for anything but 1 to MAX_DIGITS ASCII digits."""
    if len(text) > MAX_DIGITS or not _WHOLE_NUMBER.fullmatch(text):
        raise ValueError(f"not a whole number: {text[:32]!r}")
    return int(text)


def parse_decimal_number(text: str) -> float:
    """'2.5' -> 2.5; ValueError for anything but ASCII digits with at most one point."""
    if len(text) > MAX_DIGITS + 1 or not _DECIMAL_NUMBER.fullmatch(text):
        raise ValueError(f"not a number: {text[:32]!r}")
    return float(text)


# Booleans, in the environment and in request options alike.
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")


def parse_boolean(text: str) -> bool:
    """'true'/'1'/'yes'/'on' -> True, their opposites -> False (any case); ValueError else."""
    word = text.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ValueError(f"not one of {'/'.join(TRUE_WORDS)} or {'/'.join(FALSE_WORDS)}: "
                     f"{text[:32]!r}")
