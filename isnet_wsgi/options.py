"""The options of each operation: parsed from text, validated, normalised.

The API (form fields or query string) and the command line both hand their
strings to ``remove_options`` / ``color_options``, so every caller gets the
same checks and the same error codes. The frozen results double as the
normalised part of a cache key.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Callable, Mapping

from .image.encode import format_names
from .numerals import (
    FALSE_WORDS,
    TRUE_WORDS,
    parse_boolean,
    parse_decimal_number,
    parse_whole_number,
)

# Output formats per operation, with the aliases accepted for them.
REMOVE_FORMATS = format_names("PNG", "WEBP")
COLOR_FORMATS = format_names("JPEG", "PNG", "WEBP")
# Blur radius ceiling, px: beyond this the background is a uniform smear, and
# larger radii only cost time.
MAX_BLUR_RADIUS_PX = 100.0
# The smallest output long side a client may ask for.
MIN_DIMENSION_PX = 16


_HEX_COLOR = re.compile(r"#?([0-9a-fA-F]{6}|[0-9a-fA-F]{3})")
# NOTE: [0-9], not \d, which takes any script's digits ("２５５"): numerals.py's rule.
_RGB_TRIPLE = re.compile(r"([0-9]{1,3})\s*,\s*([0-9]{1,3})\s*,\s*([0-9]{1,3})")
def _any_case(word: str) -> str:
    return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else c for c in word)


# What str.strip() strips (str.isspace), as a regex class every engine reads
# alike: ECMA-262's and Rust's \s differ from Python's (\x1c-\x1f, \x85).
SPACE = "[\\t-\\r\\x1c- \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
BLANK_PATTERN = f"^{SPACE}*$"
# What numerals.parse_boolean accepts (blank: the default), as a pattern.
BOOLEAN_PATTERN = (f"^{SPACE}*(" + "|".join(_any_case(word) for word in TRUE_WORDS + FALSE_WORDS)
                   + f")?{SPACE}*$")
TRUE_PATTERN = f"^{SPACE}*(" + "|".join(_any_case(word) for word in TRUE_WORDS) + f"){SPACE}*$"
# What parse_color accepts, as the OpenAPI document's pattern (ECMA-262
# syntax); blank is the default colour. A test holds the two together.
_COMPONENT = "([01]?[0-9]?[0-9]|2[0-4][0-9]|25[0-5])"
COLOR_PATTERN = (f"^{SPACE}*$|^{SPACE}*(#?([0-9a-fA-F]{{6}}|[0-9a-fA-F]{{3}})|"
                 f"{_COMPONENT}{SPACE}*,{SPACE}*{_COMPONENT}{SPACE}*,{SPACE}*{_COMPONENT}){SPACE}*$")


def parse_color(text: str) -> tuple[int, int, int]:
    """'#RRGGBB', '#RGB' or 'R,G,B' (0-255 each) to an RGB tuple; ValueError otherwise."""
    text = text.strip()
    if match := _HEX_COLOR.fullmatch(text):
        digits = match.group(1)
        if len(digits) == 3:
            digits = "".join(d * 2 for d in digits)
        return tuple(int(digits[i:i + 2], 16) for i in (0, 2, 4))
    if match := _RGB_TRIPLE.fullmatch(text):
        rgb = tuple(int(part) for part in match.groups())
        if all(0 <= part <= 255 for part in rgb):
            return rgb
        raise ValueError(f"color components must be 0-255, got {text!r}")
    raise ValueError(f"not a color: {text!r}; use #RRGGBB, #RGB or R,G,B")


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


@dataclasses.dataclass(frozen=True)
class Option:
    """One request option, declared once: the parser, the OpenAPI schema and
    the docs page all read it.

    ``default`` is written as a client would send it (``"png"``, ``false``,
    ``"#FFFFFF"``); None means the option has no default (absent: not given).
    """

    name: str
    field: str  # the attribute of RemoveOptions / ColorOptions it fills
    type: str  # JSON Schema: string, boolean, integer or number
    description: str
    default: object = None
    choices: Mapping[str, str] | None = None  # accepted text -> value
    minimum: float | None = None
    maximum: float | None = None
    minimum_excluded: bool = False
    parse_text: Callable[[str], object] | None = None  # for a string that is no choice
    pattern: str | None = None  # what parse_text accepts, for the schema

    def read(self, values: Mapping[str, str]):
        """This option's value from the text values (missing or blank: the default)."""
        raw = given_text(values, self.name)
        if raw is None:
            return self._convert(self.default) if isinstance(self.default, str) else self.default
        if raw != values[self.name] and (self.choices is not None
                                         or self.type in ("integer", "number")):
            # NOTE: ' 5' is no number and ' png' no format, as the OpenAPI schema says;
            # only a blank field (an empty form input) stands for the default.
            self._refuse("has spaces around it", values[self.name])
        return self._convert(raw)

    def _convert(self, raw: str):
        if self.choices is not None:
            if raw.lower() not in self.choices:
                self._refuse(f"must be one of {', '.join(self.choices)}", raw)
            return self.choices[raw.lower()]
        if self.type == "boolean":
            return _or_refuse(self, parse_boolean, raw, "must be true/false, 1/0, yes/no or on/off")
        if self.type == "integer":
            value = _or_refuse(self, parse_whole_number, raw, self._range_text())
        elif self.type == "number":
            value = _or_refuse(self, parse_json_number, raw, self._range_text())
        else:
            try:
                return self.parse_text(raw)
            except ValueError as error:
                raise OptionError(f"invalid_{self.name}", str(error)) from None
        above_minimum = value > self.minimum if self.minimum_excluded else value >= self.minimum
        if not (above_minimum and value <= self.maximum):
            self._refuse(self._range_text(), raw)
        return value

    def _range_text(self) -> str:
        if self.type == "integer":
            return f"must be a whole number from {self.minimum:g} to {self.maximum:g}"
        lowest = "above" if self.minimum_excluded else "at least"
        return f"must be a number {lowest} {self.minimum:g} and at most {self.maximum:g}"

    def _refuse(self, rule: str, raw: str):
        raise OptionError(f"invalid_{self.name}", f"{self.name} {rule}; got {raw[:32]!r}.")

    def schema(self) -> dict:
        """JSON Schema of the option, with its description (OpenAPI, docs page)."""
        schema: dict = {"type": self.type, "description": self.description}
        if self.type == "boolean":
            # As text (a form, the query), the words parse_boolean reads, in any case.
            schema.update(type=["boolean", "string"], pattern=BOOLEAN_PATTERN)
        elif self.type in ("integer", "number"):
            # A blank field (an empty HTML form input) is the default.
            schema.update(type=[self.type, "string"], pattern=BLANK_PATTERN)
        if self.choices is not None:
            schema["enum"] = sorted(self.choices) + [""]  # blank: the default
        if self.minimum is not None:
            schema["exclusiveMinimum" if self.minimum_excluded else "minimum"] = self.minimum
            schema["maximum"] = self.maximum
        if self.pattern is not None:
            schema["pattern"] = self.pattern
        if self.default is not None:
            schema["default"] = self.default
        return schema


# A JSON number without a sign: how an OpenAPI client writes a `number`
# (Python and JavaScript write 0.00001 as 1e-05).
_JSON_NUMBER = re.compile(r"(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]{1,3})?")
MAX_NUMBER_CHARS = 32


def parse_json_number(text: str) -> float:
    """A decimal as numerals.py reads it, or as JSON writes it ('5e-324'); finite."""
    try:
        return parse_decimal_number(text)
    except ValueError:
        if len(text) > MAX_NUMBER_CHARS or not _JSON_NUMBER.fullmatch(text):
            raise
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"not a finite number: {text[:32]!r}")
    return value


def given_text(values: Mapping[str, str], name: str) -> str | None:
    """The stripped text of an option; None when it is absent or blank."""
    value = values.get(name)
    return None if value is None or value.strip() == "" else value.strip()


def _or_refuse(option: Option, parse, raw: str, rule: str):
    try:
        return parse(raw)
    except ValueError:
        option._refuse(rule, raw)


def _output_format(choices: Mapping[str, str], default: str, description: str) -> Option:
    return Option("format", "image_format", "string", description, default, choices=choices)


def _max_dimension(ceiling_px: int) -> Option:
    return Option("max_dimension", "max_dimension_px", "integer",
                  f"Long side of the output, px: at most {ceiling_px} here (MAX_DIMENSION, "
                  "which may be raised to 8192 for full-resolution cut-outs). Above it is "
                  "refused (400), not clamped; images are never scaled up.", ceiling_px,
                  minimum=MIN_DIMENSION_PX, maximum=ceiling_px)


def _refine(refine_default: bool) -> Option:
    return Option("refine", "refine", "boolean",
                  "Refine the mask's edges with a guided filter on the image, so hair and soft "
                  "outlines follow the photo (the default is the REFINE_DEFAULT setting).",
                  refine_default)


def remove_spec(*, ceiling_px: int, refine_default: bool = False) -> tuple[Option, ...]:
    """Every option of /api/bg/remove."""
    return (
        _output_format(REMOVE_FORMATS, "png", "png, or webp (lossless, with alpha)."),
        Option("mask", "mask", "boolean", "Answer the greyscale mask (mask_<name>) instead of "
               "the cut-out. Booleans accept true/false, 1/0, yes/no, on/off.", False),
        Option("crop", "crop", "boolean",
               "Crop to the subject's bounding box (the whole image if none).", False),
        Option("margin", "margin_px", "integer", "Pixels kept around the subject, clamped to "
               "the image; only with crop=true.", 0, minimum=0, maximum=ceiling_px),
        _max_dimension(ceiling_px),
        _refine(refine_default),
    )


def color_spec(*, ceiling_px: int, refine_default: bool = False) -> tuple[Option, ...]:
    """Every option of /api/bg/change_color."""
    return (
        _output_format(COLOR_FORMATS, "jpeg", "jpeg (quality 90), png, or webp (lossless)."),
        Option("color", "rgb", "string", "Background colour: #RRGGBB, #RGB or R,G,B (0-255), "
               "e.g. #00FF00, #0F0 or 0,255,0.", "#FFFFFF", parse_text=parse_color,
               pattern=COLOR_PATTERN),
        # NOTE: a radius of 0 would be the unblurred photo: the original background.
        Option("blur", "blur_radius_px", "number", "Keep the photo's own background, "
               "Gaussian-blurred with this radius (px). One background only: color, blur or "
               "bg_file.", minimum=0.0, maximum=MAX_BLUR_RADIUS_PX, minimum_excluded=True),
        _max_dimension(ceiling_px),
        _refine(refine_default),
    )


# Options that only make sense together, or not at all together: each group
# is read from one place (the form, when it names any of them; else the query).
REMOVE_GROUPS = (("crop", "margin"),)
COLOR_GROUPS = (("color", "blur", "bg_file"),)
BACKGROUNDS = COLOR_GROUPS[0]


def remove_rules_schema() -> dict:
    """remove_options' rule between options, as JSON Schema: margin needs crop.

    NOTE: written with anyOf and false schemas, not if/then/not: schemathesis
    cannot judge a conditional over an object that holds a file.
    """
    no_margin = {"anyOf": [{"const": 0}, {"type": "string", "pattern": f"^{SPACE}*0*{SPACE}*$"}]}
    crop = {"anyOf": [{"const": True}, {"type": "string", "pattern": TRUE_PATTERN}]}
    return {"anyOf": [{"properties": {"margin": no_margin}},
                      {"required": ["crop"], "properties": {"crop": crop}}]}


def color_rules_schema(names: tuple[str, ...] = BACKGROUNDS) -> dict:
    """color_options' rule as JSON Schema: at most one of the backgrounds named
    (a blank colour is the default, not a choice). See remove_rules_schema."""
    absent = {name: ({"pattern": BLANK_PATTERN} if name == "color" else False) for name in names}
    return {"anyOf": [{"properties": {name: absent[name] for name in names if name != kept}}
                      for kept in names]}


def check_known(spec: tuple[Option, ...], values: Mapping[str, str], *,
                also: tuple[str, ...] = ()) -> None:
    """An option no one declared is refused, naming the ones that exist:
    ``-F Crop=true`` or ``-F colour=#000`` would otherwise do nothing, silently."""
    known = [option.name for option in spec] + list(also)
    unknown = sorted(name for name in values if name not in known)
    if unknown:
        names = ", ".join(repr(name[:32]) for name in unknown[:4])
        raise OptionError("unknown_option", f"Unknown option {names}; the options are: "
                                            f"{', '.join(known)} (names are lower case).")


def _read(spec: tuple[Option, ...], values: Mapping[str, str]) -> dict:
    return {option.field: option.read(values) for option in spec}


def remove_options(values: Mapping[str, str], *, ceiling_px: int,
                   refine_default: bool = False) -> RemoveOptions:
    """Options for /remove from text values (missing or blank: the default)."""
    spec = remove_spec(ceiling_px=ceiling_px, refine_default=refine_default)
    check_known(spec, values)
    given = _read(spec, values)
    if given["margin_px"] and not given["crop"]:
        raise OptionError("invalid_margin", "margin applies only with crop=true.")
    return RemoveOptions(**given)


def color_options(values: Mapping[str, str], *, ceiling_px: int, refine_default: bool = False,
                  background_file: bool = False) -> ColorOptions:
    """Options for /change_color from text values (missing or blank: the default).

    One background at a time: a colour, a blur of the photo's own, or an
    image (``background_file``); naming two is an error rather than a guess.
    """
    spec = color_spec(ceiling_px=ceiling_px, refine_default=refine_default)
    check_known(spec, values)
    given = _read(spec, values)
    named = (given_text(values, "color") is not None, given["blur_radius_px"] is not None,
             background_file)
    if sum(named) > 1:
        raise OptionError("conflicting_background",
                          "Send one background: color, blur or bg_file.")
    return ColorOptions(**given)
