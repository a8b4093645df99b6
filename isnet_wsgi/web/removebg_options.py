"""remove.bg's request parameters (POST /v1.0/removebg), read as its API reference says.

Each parameter is declared once in ``PARAMETERS``: the parser and the
OpenAPI schema read it. Parameters that make no sense here (``type``,
``roi``, ``scale``, ``add_shadow``...) are accepted, checked and ignored;
``image_url`` and ``bg_image_url`` are refused (the service makes no
outbound requests); a name remove.bg does not know is refused.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Mapping

from PIL import ImageColor

from ..numerals import parse_boolean
from ..options import MIN_DIMENSION_PX, OptionError

# The most pixels of the answer for each ``size`` (remove.bg's megapixels);
# None: up to the service's ceiling (MAX_DIMENSION).
SIZE_PIXELS = {"preview": 250_000, "small": 250_000, "regular": 250_000,
               "medium": 1_500_000, "hd": 4_000_000, "full": None, "4k": None, "auto": None}
FORMATS = ("auto", "png", "jpg", "zip")
CHANNELS = ("rgba", "alpha")
# remove.bg's cap on each side of crop_margin: 50% of the subject's size, or 500 px.
MAX_MARGIN_FRACTION = 0.5
MAX_MARGIN_PX = 500
# The image sources remove.bg fetches from the web; this service never does.
URL_PARAMETERS = ("image_url", "bg_image_url")
FILE_PARAMETERS = ("image_file", "bg_image_file")

_HEX = r"#?([0-9a-fA-F]{3}|[0-9a-fA-F]{4}|[0-9a-fA-F]{6}|[0-9a-fA-F]{8})"
COLOR_NAMES = tuple(sorted(ImageColor.colormap))
BG_COLOR_PATTERN = rf"^({_HEX}|{'|'.join(COLOR_NAMES)})$"
_MARGIN_VALUE = r"[0-9]{1,4}(px|%)?"
# One value (all sides), two (top/bottom, left/right) or four (top, right, bottom, left).
CROP_MARGIN_PATTERN = (rf"^{_MARGIN_VALUE}( {_MARGIN_VALUE})?$|"
                       rf"^{_MARGIN_VALUE}( {_MARGIN_VALUE}){{3}}$")
_BOOLEAN = ("true", "false")  # any case: Python clients send True


@dataclass(frozen=True)
class Parameter:
    name: str
    schema: dict
    description: str
    ignored: bool = False


PARAMETERS = (
    Parameter("size", {"type": "string", "enum": list(SIZE_PIXELS), "default": "preview"},
              "Most pixels of the answer: preview/small/regular 0.25 MP, medium 1.5 MP, "
              "hd 4 MP, full/4k/auto up to MAX_DIMENSION on the long side."),
    Parameter("format", {"type": "string", "enum": list(FORMATS), "default": "auto"},
              "auto: PNG when the answer has transparency, else JPEG; png; jpg; zip "
              "(color.jpg and alpha.png, as remove.bg makes it)."),
    Parameter("channels", {"type": "string", "enum": list(CHANNELS), "default": "rgba"},
              "rgba: the cut-out; alpha: the greyscale mask only."),
    Parameter("bg_color", {"type": "string", "pattern": BG_COLOR_PATTERN},
              "A background colour: hex with 3, 4, 6 or 8 digits (# optional; 4 and 8 carry "
              "alpha) or a lower-case CSS colour name. Not with bg_image_file."),
    Parameter("crop", {"type": "boolean", "default": False},
              "Crop to the subject's bounding box."),
    Parameter("crop_margin", {"type": "string", "pattern": CROP_MARGIN_PATTERN, "default": "0"},
              "Margin around the cropped subject: px or % of the subject's size; 1, 2 "
              "(top/bottom, left/right) or 4 (top, right, bottom, left) values; each side at "
              "most 50% of the subject or 500 px; clamped to the image. Only with crop=true."),
    Parameter("type", {"type": "string", "enum": ["auto", "person", "product", "animal", "car",
                                                  "transportation", "graphic", "other"]},
              "Accepted and ignored: one model serves every kind of subject.", ignored=True),
    Parameter("type_level", {"type": "string", "enum": ["none", "latest", "1", "2"]},
              "Accepted and ignored.", ignored=True),
    Parameter("roi", {"type": "string"}, "Accepted and ignored: the whole image is used.",
              ignored=True),
    Parameter("scale", {"type": "string"}, "Accepted and ignored: the subject keeps its scale.",
              ignored=True),
    Parameter("position", {"type": "string"}, "Accepted and ignored: the subject keeps its "
              "position.", ignored=True),
    Parameter("add_shadow", {"type": "boolean"}, "Accepted and ignored: no shadow is added.",
              ignored=True),
    Parameter("semitransparency", {"type": "boolean"}, "Accepted and ignored.", ignored=True),
    Parameter("shadow_type", {"type": "string"}, "Accepted and ignored.", ignored=True),
    Parameter("shadow_opacity", {"type": "integer", "minimum": 0, "maximum": 100},
              "Accepted and ignored.", ignored=True),
)
_BY_NAME = {parameter.name: parameter for parameter in PARAMETERS}
# The JSON type each parameter must have in a JSON body.
JSON_TYPES = {"image_file_b64": str, **{parameter.name: {
    "boolean": bool, "integer": int, "string": str}[parameter.schema["type"]]
    for parameter in PARAMETERS}}


@dataclass(frozen=True)
class RemoveBgOptions:
    max_pixels: int | None = SIZE_PIXELS["preview"]
    image_format: str = "auto"
    channels: str = "rgba"
    # (red, green, blue, alpha), or None for transparency.
    bg_color: tuple[int, int, int, int] | None = None
    crop: bool = False
    # (top, right, bottom, left), each (value, is_percent).
    crop_margin: tuple[tuple[int, bool], ...] = ((0, False),) * 4
    # The REFINE_DEFAULT setting (remove.bg has no such parameter).
    refine: bool = False


def _refuse(code: str, message: str):
    raise OptionError(code, message)


def _choice(values: Mapping[str, str], name: str, choices) -> str:
    value = values.get(name, _BY_NAME[name].schema.get("default"))
    if value not in choices:
        _refuse(f"invalid_{name}", f"{name} must be one of {', '.join(choices)}; "
                                   f"got {str(value)[:32]!r}.")
    return value


def _boolean(values: Mapping[str, str], name: str) -> bool:
    value = values.get(name, "false")
    if value.lower() not in _BOOLEAN:
        _refuse(f"invalid_{name}", f"{name} must be true or false; got {value[:32]!r}.")
    return parse_boolean(value)


def parse_bg_color(text: str) -> tuple[int, int, int, int]:
    """remove.bg's colour: hex of 3, 4, 6 or 8 digits (# optional), or a colour name."""
    if not re.fullmatch(BG_COLOR_PATTERN, text):
        _refuse("invalid_bg_color", f"bg_color must be hex (3, 4, 6 or 8 digits) or a "
                                    f"lower-case colour name; got {text[:32]!r}.")
    if text in ImageColor.colormap:
        return (*ImageColor.getrgb(text)[:3], 255)
    digits = text.lstrip("#")
    if len(digits) in (3, 4):
        digits = "".join(digit * 2 for digit in digits)
    rgba = tuple(int(digits[i:i + 2], 16) for i in range(0, len(digits), 2))
    return rgba if len(rgba) == 4 else (*rgba, 255)


def parse_crop_margin(text: str) -> tuple[tuple[int, bool], ...]:
    """'10px', '10%', '10px 20px' or four values to (top, right, bottom, left)."""
    if not re.fullmatch(CROP_MARGIN_PATTERN, text):
        _refuse("invalid_crop_margin", "crop_margin is 1, 2 or 4 values, each px or % "
                                       f"(30px, 10%, 10px 20px); got {text[:32]!r}.")
    sides = [(int(value.rstrip("px%")), value.endswith("%")) for value in text.split(" ")]
    if len(sides) == 1:
        sides *= 4
    elif len(sides) == 2:
        sides *= 2
    return tuple(sides)


def margin_box(subject: tuple[int, int, int, int], margin: tuple[tuple[int, bool], ...],
               size: tuple[int, int]) -> tuple[int, int, int, int]:
    """The subject's box (left, top, right, bottom) widened by the margin, each
    side capped as remove.bg caps it, then clamped to the image."""
    left, top, right, bottom = subject
    width, height = right - left, bottom - top

    def side(value_percent: tuple[int, bool], extent: int) -> int:
        value, percent = value_percent
        pixels = extent * value // 100 if percent else value
        return min(pixels, int(extent * MAX_MARGIN_FRACTION), MAX_MARGIN_PX)

    top_px, right_px, bottom_px, left_px = (side(margin[0], height), side(margin[1], width),
                                            side(margin[2], height), side(margin[3], width))
    return (max(0, left - left_px), max(0, top - top_px),
            min(size[0], right + right_px), min(size[1], bottom + bottom_px))


def max_dimension_for(size_px: tuple[int, int], max_pixels: int | None,
                      ceiling_px: int) -> int:
    """The long side that keeps an image of ``size_px`` within ``max_pixels``."""
    if max_pixels is None or size_px[0] * size_px[1] <= max_pixels:
        return ceiling_px
    scale = math.sqrt(max_pixels / (size_px[0] * size_px[1]))
    return max(MIN_DIMENSION_PX, min(ceiling_px, int(max(size_px) * scale)))


def removebg_options(values: Mapping[str, str], *, refine: bool = False) -> RemoveBgOptions:
    """The options from remove.bg's parameters, as text."""
    for name in values:
        if name in URL_PARAMETERS:
            _refuse(f"{name}_not_supported", f"{name} is not supported: this service makes "
                                             "no outbound requests; send the image itself "
                                             f"({'image_file or image_file_b64' if name == 'image_url' else 'bg_image_file'}).")
        if name not in _BY_NAME:
            _refuse("unknown_parameter", f"Unknown parameter {name[:32]!r}; remove.bg's are: "
                                         f"{', '.join(FILE_PARAMETERS + ('image_file_b64',) + tuple(_BY_NAME))}.")
    for parameter in PARAMETERS:
        if parameter.ignored and parameter.name in values:
            _check_ignored(parameter, values[parameter.name])
    bg_color = values.get("bg_color")
    return RemoveBgOptions(
        max_pixels=SIZE_PIXELS[_choice(values, "size", SIZE_PIXELS)],
        image_format=_choice(values, "format", FORMATS),
        channels=_choice(values, "channels", CHANNELS),
        bg_color=parse_bg_color(bg_color) if bg_color is not None else None,
        crop=_boolean(values, "crop"),
        crop_margin=parse_crop_margin(values.get("crop_margin", "0")), refine=refine)


def _check_ignored(parameter: Parameter, value: str) -> None:
    """An ignored parameter is still checked against its schema: a typo is a 400."""
    kind = parameter.schema["type"]
    if "enum" in parameter.schema:
        _choice({parameter.name: value}, parameter.name, parameter.schema["enum"])
    elif kind == "boolean":
        _boolean({parameter.name: value}, parameter.name)
    elif kind == "integer":
        low, high = parameter.schema["minimum"], parameter.schema["maximum"]
        if not (re.fullmatch(r"[0-9]{1,3}", value) and low <= int(value) <= high):
            _refuse(f"invalid_{parameter.name}",
                    f"{parameter.name} must be a whole number from {low} to {high}.")
