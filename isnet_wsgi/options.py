"""The options of each operation: parsed from text, validated, normalised.

The API (form fields or query string) and the command line both hand their
strings to ``remove_options`` / ``color_options``, so every caller gets the
same checks and the same error codes. The frozen results double as the
normalised part of a cache key.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

from .imaging import parse_color
from .numerals import parse_boolean, parse_decimal_number, parse_whole_number

# Output formats per operation, with the aliases accepted for them.
REMOVE_FORMATS = {"png": "PNG", "webp": "WEBP"}
COLOR_FORMATS = {"jpeg": "JPEG", "jpg": "JPEG", "png": "PNG", "webp": "WEBP"}
# Blur radius ceiling, px: beyond this the background is a uniform smear, and
# larger radii only cost time.
MAX_BLUR_RADIUS_PX = 100.0
# The smallest output long side a client may ask for.
MIN_DIMENSION_PX = 16

class OptionError(ValueError):
    """An option's value is not acceptable; ``code`` names which (the API's 400)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


@dataclasses.dataclass(frozen=True)
class RemoveOptions:
    image_format: str = "PNG"
    mask: bool = False
    crop: bool = False
    margin_px: int = 0
    # None: the configured ceiling (the parsers always fill it in, so equal
    # requests give equal cache keys).
    max_dimension_px: int | None = None
    refine: bool = False


@dataclasses.dataclass(frozen=True)
class ColorOptions:
    image_format: str = "JPEG"
    rgb: tuple[int, int, int] = (255, 255, 255)
    blur_radius_px: float | None = None
    max_dimension_px: int | None = None
    refine: bool = False


def cache_key_part(options) -> str:
    """The options as a stable string: equal options give equal text."""
    return repr(dataclasses.astuple(options))


def remove_options(values: Mapping[str, str], *, ceiling_px: int,
                   refine_default: bool = False) -> RemoveOptions:
    """Options for /remove from text values (missing or blank: the default)."""
    given = _Given(values)
    crop = given.boolean("crop", False)
    margin_px = given.integer("margin", 0, low=0, high=ceiling_px)
    if margin_px and not crop:
        raise OptionError("invalid_margin", "margin applies only with crop=true.")
    return RemoveOptions(
        image_format=given.choice("format", "png", REMOVE_FORMATS),
        mask=given.boolean("mask", False),
        crop=crop,
        margin_px=margin_px,
        max_dimension_px=given.integer("max_dimension", ceiling_px, low=MIN_DIMENSION_PX,
                                       high=ceiling_px),
        refine=given.boolean("refine", refine_default),
    )


def color_options(values: Mapping[str, str], *, ceiling_px: int, refine_default: bool = False,
                  background_file: bool = False) -> ColorOptions:
    """Options for /change_color from text values (missing or blank: the default).

    One background at a time: a colour, a blur of the photo's own, or an
    image (``background_file``); naming two is an error rather than a guess.
    """
    given = _Given(values)
    color_text = given.text("color")
    try:
        rgb = parse_color(color_text) if color_text is not None else (255, 255, 255)
    except ValueError as error:
        raise OptionError("invalid_color", str(error)) from None
    blur = given.number("blur", low=0.0, high=MAX_BLUR_RADIUS_PX)
    if sum((color_text is not None, blur is not None, background_file)) > 1:
        raise OptionError("conflicting_background",
                          "Send one background: color, blur or bg_file.")
    return ColorOptions(
        image_format=given.choice("format", "jpeg", COLOR_FORMATS),
        rgb=rgb,
        blur_radius_px=blur,
        max_dimension_px=given.integer("max_dimension", ceiling_px, low=MIN_DIMENSION_PX,
                                       high=ceiling_px),
        refine=given.boolean("refine", refine_default),
    )


class _Given:
    """Typed reads of text options; each bad value is an OptionError named for it."""

    def __init__(self, values: Mapping[str, str]):
        self._values = values

    def text(self, name: str) -> str | None:
        value = self._values.get(name)
        return None if value is None or value.strip() == "" else value.strip()

    def choice(self, name: str, default: str, choices: dict[str, str]) -> str:
        raw = (self.text(name) or default).lower()
        if raw not in choices:
            raise OptionError(f"invalid_{name}", f"{name} must be one of "
                              f"{', '.join(choices)}; got {raw[:32]!r}.")
        return choices[raw]

    def boolean(self, name: str, default: bool) -> bool:
        raw = self.text(name)
        if raw is None:
            return default
        try:
            return parse_boolean(raw)
        except ValueError:
            raise OptionError(f"invalid_{name}", f"{name} must be true/false, 1/0, yes/no or "
                              f"on/off; got {raw[:32]!r}.") from None

    def integer(self, name: str, default: int | None, *, low: int, high: int) -> int | None:
        raw = self.text(name)
        if raw is None:
            return default
        value = _parsed_or_none(parse_whole_number, raw)
        if value is None or not low <= value <= high:
            raise OptionError(f"invalid_{name}", f"{name} must be a whole number from "
                              f"{low} to {high}; got {raw[:32]!r}.")
        return value

    def number(self, name: str, *, low: float, high: float) -> float | None:
        raw = self.text(name)
        if raw is None:
            return None
        value = _parsed_or_none(parse_decimal_number, raw)
        # NOTE: a radius of 0 would be the unblurred photo: the original background.
        if value is None or not low < value <= high:
            raise OptionError(f"invalid_{name}", f"{name} must be a number above {low:g} "
                              f"and at most {high:g}; got {raw[:32]!r}.")
        return value


def _parsed_or_none(parse, raw: str):
    """``parse(raw)``, or None where it raises ValueError (the caller names the option)."""
    try:
        return parse(raw)
    except ValueError:
        return None
