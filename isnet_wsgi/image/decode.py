"""Uploads to images: open and validate, check the budgets, decode, shrink.

Everything here works on bytes and Pillow images in memory; nothing touches
the disk. The pixel and memory budgets are checked from the header, before
any pixel is decoded. Errors are ``InvalidImage`` subclasses (errors.py).
"""

from __future__ import annotations

import io
import struct
import warnings

from PIL import Image

from . import pngdecode, shrink
from .errors import DecodeBudgetExceeded, ImageTooLarge, InvalidImage, UnsupportedImage

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
# Pillow opens a JPEG with more pictures after the first (phones' MPO) as
# "MPO": the same decoder, the same draft.
_JPEG_FORMATS = ("JPEG", "MPO")
# What a decode takes beyond what decode_cost_bytes counts (Python objects,
# zlib's window, libjpeg's tables): measured at 0.5-1 MB, counted as 8.
_DECODE_OVERHEAD_BYTES = 8 * _MIB
_EXIF_ORIENTATION = 0x0112
# What each EXIF orientation needs to be upright (as ImageOps.exif_transpose).
_TRANSPOSE_BY_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def decode(data: bytes, *, formats: tuple[str, ...], max_pixels: int,
           max_dimension_px: int, budget_bytes: int | None = None) -> Image.Image:
    """Decode an upload into an RGB or RGBA image no larger than max_dimension_px.

    The pixel budget and the memory budget are checked from the header,
    before any pixel is decoded, so a small file declaring 40000x40000 px, or
    5000x5000 px of 16-bit samples, costs nothing. Only the first frame of an
    animation is used; EXIF orientation is applied.
    """
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
    if image.format in _JPEG_FORMATS:
        # PERF: let libjpeg decode at 1/2, 1/4 or 1/8 scale when the image
        # will be shrunk anyway: less memory and time than a full decode.
        image.draft(image.mode, shrink.fit_size(image.size, max_dimension_px))
    needed_bytes = decode_cost_bytes(image, (width, height), max_dimension_px)
    if budget_bytes is not None and needed_bytes > budget_bytes:
        raise DecodeBudgetExceeded(
            f"Decoding this {width}x{height} px {image.format} image ({image.mode}) would "
            f"take about {needed_bytes / _MIB:.0f} MB; the decode budget is "
            f"{budget_bytes / _MIB:.0f} MB.")
    try:
        image = _loaded(data, image)
        orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
    except Image.DecompressionBombError as error:
        raise ImageTooLarge(str(error)) from None
    except _DECODE_ERRORS:
        raise InvalidImage("The image data is damaged or truncated.") from None
    # PERF: rotated after shrinking, so the turn copies 1024 px, not the original.
    image = shrink.shrunk_rgb_or_rgba(image, max_dimension_px)
    transpose = _TRANSPOSE_BY_ORIENTATION.get(orientation)
    return image if transpose is None else image.transpose(transpose)


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


def decode_cost_bytes(image: Image.Image, header_size: tuple[int, int],
                      max_dimension_px: int) -> int:
    """Bytes decoding and shrinking this opened (not yet loaded) image takes at most.

    ``header_size`` is the size the file declares; ``image.size`` may be
    smaller after a JPEG draft. Counted: the decoded pixels as Pillow stores
    them, the decoder's own buffers, and the shrink's strips and results.
    """
    width, height = image.size
    # NOTE: Pillow also keeps a pointer per row: 100 MB for a 2 x 12,500,000 image.
    decoded = height * (width * _bytes_per_pixel(image.mode) + 8)
    return (_DECODE_OVERHEAD_BYTES + decoded + _decoder_bytes(image, header_size)
            + shrink.cost_bytes(image.mode, image.size, max_dimension_px))


def _bytes_per_pixel(mode: str) -> int:
    # Pillow keeps 1 byte for 1, L and P, 2 for I;16*, and 4 for the rest
    # (RGB and LA included: one 32-bit word per pixel).
    if mode in ("1", "L", "P"):
        return 1
    return 2 if mode.startswith("I;16") else 4


def _decoder_bytes(image: Image.Image, header_size: tuple[int, int]) -> int:
    """The decoder's buffers beside the image, from its format (measured, see tests)."""
    width, height = header_size
    if image.format == "WEBP":
        # libwebp's animation decoder (Pillow's only one) keeps two RGBA
        # canvases, and Pillow copies the frame into bytes before the image.
        return 3 * width * height * 4
    if image.format == "PNG":
        # The current and previous row, at up to 8 bytes a pixel (RGBA, 16
        # bits), and the pieces of a pipelined decode.
        return 2 * width * 8 + pngdecode.BUFFER_BYTES
    if image.format == "TIFF":
        # libtiff decodes a strip or tile at a time into a buffer of its own,
        # as big as the file declares it.
        tags = image.tag_v2
        if _tiff_number(tags, 322):  # TileWidth
            block_pixels = _tiff_number(tags, 322) * _tiff_number(tags, 323, height)
        else:  # RowsPerStrip
            block_pixels = width * min(height, _tiff_number(tags, 278, height))
        return block_pixels * max(4, _tiff_number(tags, 277, 1) * _tiff_sample_bytes(tags))
    if image.format in _JPEG_FORMATS and image.info.get("progressive"):
        # A progressive JPEG keeps every DCT coefficient (2 bytes) of every
        # component at its full sampled size, whatever the draft scale.
        layers = [(max(1, h), max(1, v)) for _, h, v, _ in getattr(image, "layer", ())]
        layers = layers or [(1, 1)] * len(image.getbands())
        most_h, most_v = max(h for h, _ in layers), max(v for _, v in layers)
        return 2 * sum(-(-width * h // most_h) * -(-height * v // most_v) for h, v in layers)
    return 0


def _tiff_number(tags, tag: int, default: int = 0) -> int:
    """A positive whole-number TIFF tag, or the default for one missing or odd."""
    value = tags.get(tag)
    return value if isinstance(value, int) and value > 0 else default


def _tiff_sample_bytes(tags) -> int:
    """Bytes per sample from BitsPerSample (one number, or one per sample)."""
    bits = tags.get(258)
    given = [b for b in (bits if isinstance(bits, tuple) else (bits,))
             if isinstance(b, int) and 0 < b <= 64]
    return -(-max(given, default=8) // 8)
