"""Uploads to images: open and validate, check the budget (cost.py), decode, shrink.

Everything here works on bytes and Pillow images in memory; nothing touches
the disk. The pixel and memory budgets are checked from the header, before
any pixel is decoded. Errors are ``InvalidImage`` subclasses (errors.py).
"""

from __future__ import annotations

import io
import struct
import warnings

from PIL import Image

from . import pngdecode
from .cost import JPEG_FORMATS, decode_cost_bytes
from .errors import DecodeBudgetExceeded, ImageTooLarge, InvalidImage, UnsupportedImage
from .shrink import fit_size, shrunk_rgb_or_rgba

# Pillow's names for the formats behind the allowed extensions. Opening is
# restricted to these, so no other decoder ever sees untrusted bytes.
FORMAT_BY_EXTENSION = {
    "png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "gif": "GIF",
    "bmp": "BMP", "tif": "TIFF", "tiff": "TIFF", "webp": "WEBP",
}

# What Pillow itself raises on bytes it cannot decode.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError,
                  TypeError, KeyError, ZeroDivisionError, struct.error)

_MIB = 1024 * 1024
_EXIF_ORIENTATION = 0x0112
# What each EXIF orientation needs to be upright (as ImageOps.exif_transpose).
_TRANSPOSE_BY_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
# The orientations whose turn swaps width and height.
_SWAPPING_ORIENTATIONS = (5, 6, 7, 8)


def declared_size(data: bytes, *, formats: tuple[str, ...], max_pixels: int) -> tuple[int, int]:
    """The size the header declares (before any EXIF turn), read without
    decoding, by the same restricted opener and pixel limit as ``decode``."""
    return _opened(data, formats, max_pixels).size


def fitted_size(data: bytes, *, formats: tuple[str, ...], max_pixels: int,
                max_dimension_px: int, budget_bytes: int | None = None) -> tuple[int, int]:
    """The size ``decode`` would give, its EXIF turn included, from the
    header alone: what the pipeline chooses its way by. With ``budget_bytes``,
    that decode's cost is checked too, so a full-resolution request over it
    is refused before its first, reduced, decode and inference.

    NOTE: a turn declared only after the pixels (a PNG's late eXIf) is not
    seen here; decode() still applies it.
    """
    image = _opened(data, formats, max_pixels)
    header_size = image.size
    target = fit_size(header_size, max_dimension_px)
    if budget_bytes is not None:
        _draft(image, target)
        _check_budget(image, header_size, target, budget_bytes)
    return target[::-1] if _declared_orientation(image) in _SWAPPING_ORIENTATIONS else target


def decode(data: bytes, *, formats: tuple[str, ...], max_pixels: int,
           max_dimension_px: int, budget_bytes: int | None = None,
           size: tuple[int, int] | None = None) -> Image.Image:
    """Decode an upload into an RGB or RGBA image no larger than max_dimension_px,
    or of exactly ``size`` (before the EXIF turn; the model's own view of it).

    The pixel budget and the memory budget are checked from the header,
    before any pixel is decoded, so a small file declaring 40000x40000 px, or
    5000x5000 px of 16-bit samples, costs nothing. Only the first frame of an
    animation is used; EXIF orientation is applied.
    """
    image = _opened(data, formats, max_pixels)
    width, height = image.size
    target = size or fit_size(image.size, max_dimension_px)
    _draft(image, target)
    if budget_bytes is not None:
        _check_budget(image, (width, height), target, budget_bytes)
    try:
        image = _loaded(data, image)
        orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
    except Image.DecompressionBombError as error:
        raise ImageTooLarge(str(error)) from None
    except _DECODE_ERRORS:
        raise InvalidImage("The image data is damaged or truncated.") from None
    # PERF: rotated after shrinking, so the turn copies 1024 px, not the original.
    image = shrunk_rgb_or_rgba(image, target)
    transpose = _TRANSPOSE_BY_ORIENTATION.get(orientation)
    return image if transpose is None else image.transpose(transpose)


def _opened(data: bytes, formats: tuple[str, ...], max_pixels: int) -> Image.Image:
    """The upload opened (its header read, no pixel decoded), within max_pixels."""
    if not data:
        raise InvalidImage("The file is empty.")
    image = _open(data, formats)
    width, height = image.size
    if width < 1 or height < 1:
        raise InvalidImage("The image has no pixels.")
    if width * height > max_pixels:
        raise ImageTooLarge(
            f"The image is {width}x{height} px ({width * height} pixels); "
            f"the limit is {max_pixels} pixels.")
    return image


def _draft(image: Image.Image, target: tuple[int, int]) -> None:
    if image.format in JPEG_FORMATS:
        # PERF: let libjpeg decode at 1/2, 1/4 or 1/8 scale when the image
        # will be shrunk anyway: less memory and time than a full decode.
        image.draft(image.mode, target)


def _check_budget(image: Image.Image, header_size: tuple[int, int], target: tuple[int, int],
                  budget_bytes: int) -> None:
    """Refuse (413) a decode of this opened image to ``target`` whose
    estimate (of the drafted decode, for a JPEG) is over the budget."""
    needed_bytes = decode_cost_bytes(image, header_size, target,
                                     turned=_declared_orientation(image) in _TRANSPOSE_BY_ORIENTATION)
    if needed_bytes > budget_bytes:
        width, height = header_size
        raise DecodeBudgetExceeded(
            f"Decoding this {width}x{height} px {image.format} image ({image.mode}) would "
            f"take about {needed_bytes / _MIB:.0f} MB; the decode budget is "
            f"{budget_bytes / _MIB:.0f} MB.")


def _declared_orientation(image: Image.Image) -> int:
    """The EXIF orientation the header declares, read without decoding.

    NOTE: not getexif(), which for a PNG decodes the whole image to look for
    an eXIf chunk after the pixels; such a late chunk's turn goes uncounted.
    """
    try:
        if image.format == "TIFF":
            return int(image.tag_v2.get(0x0112, 1))
        exif = image.info.get("exif")
        if not exif:
            return 1
        declared = Image.Exif()
        declared.load(exif)
        return int(declared.get(_EXIF_ORIENTATION, 1))
    except _DECODE_ERRORS:
        return 1  # unreadable here: the decode itself says so, or ignores it


def _loaded(data: bytes, image: Image.Image) -> Image.Image:
    """The opened image with its pixels decoded."""
    if image.format == "PNG":
        # PERF: inflated on another core while Pillow unfilters (pngdecode);
        # None where the file takes Pillow alone.
        pipelined = pngdecode.load(data)
        if pipelined is not None and (pipelined.size, pipelined.mode) == (image.size, image.mode):
            return pipelined
    image.load()
    return image


def _open(data: bytes, formats: tuple[str, ...]) -> Image.Image:
    try:
        with warnings.catch_warnings():
            # Pillow warns (then errors) past its own bomb limit; ours is stricter.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data), formats=formats)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageTooLarge(str(error)) from None
    except Image.UnidentifiedImageError:
        raise UnsupportedImage(
            "The file is not an image in a supported format "
            f"({', '.join(sorted(set(f.lower() for f in formats)))}).") from None
    except _DECODE_ERRORS:
        raise InvalidImage("The image header is damaged.") from None


