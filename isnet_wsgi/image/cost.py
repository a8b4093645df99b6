"""What decoding an upload will cost, in bytes, from its header alone.

The one estimate decode.py checks against DECODE_BUDGET_MB before any pixel
is decoded: the decoded pixels as Pillow stores them, the decoder's own
buffers (by format), the shrink's strips and results (shrink.py's plan), and
an EXIF turn's second copy. Each figure was measured (tests/test_image.py,
tests/system/test_decode_budget.py).
"""

from __future__ import annotations

from PIL import Image

from . import pngdecode
from .shrink import RESAMPLED_AS_IS, is_high_bit_depth, margin_rows, reduce_factors, rows_per_strip

_MIB = 1024 * 1024
# What a decode takes beyond what is counted here (Python objects, zlib's
# window, libjpeg's tables): measured at 0.5-1 MB, counted as 8.
_DECODE_OVERHEAD_BYTES = 8 * _MIB
# Pillow opens a JPEG with more pictures after the first (phones' MPO) as
# "MPO": the same decoder, the same draft.
JPEG_FORMATS = ("JPEG", "MPO")


def decode_cost_bytes(image: Image.Image, header_size: tuple[int, int],
                      target: tuple[int, int], *, turned: bool = False) -> int:
    """Bytes decoding this opened (not yet loaded) image and shrinking it to
    ``target`` take at most; ``turned``: an EXIF orientation copies the result.

    ``header_size`` is the size the file declares; ``image.size`` may be
    smaller after a JPEG draft.
    """
    width, height = image.size
    # NOTE: Pillow also keeps a pointer per row: 100 MB for a 2 x 12,500,000 image.
    decoded = height * (width * _bytes_per_pixel(image.mode) + 8)
    turn = 4 * target[0] * target[1] if turned else 0
    return (_DECODE_OVERHEAD_BYTES + decoded + _decoder_bytes(image, header_size)
            + shrink_cost_bytes(image.mode, image.size, target) + turn)


def shrink_cost_bytes(mode: str, size: tuple[int, int], target: tuple[int, int]) -> int:
    """The most memory shrink.shrunk_rgb_or_rgba needs beside the decoded image."""
    width, height = size
    if target == size:
        # Converted whole: a 4-byte copy, and for 16/32-bit samples a float32
        # and an 8-bit one before it.
        if mode in ("RGB", "RGBA"):
            return 0
        return (9 if is_high_bit_depth(mode) else 4) * width * height
    factor_x, factor_y = reduce_factors(size, target)
    reduced_height = -(-height // factor_y)
    reduced = -(-width // factor_x) * reduced_height if factor_x * factor_y > 1 else 0
    # LANCZOS's horizontal pass keeps target-width rows for the height it
    # resamples at once: the whole (reduced) image, or one strip.
    horizontal_pass = target[0] * reduced_height
    strips = 0
    if mode not in RESAMPLED_AS_IS:
        # NOTE: a strip is a few rows however wide they are: the strip of a
        # 1,000,000 x 25 image is all of it, and the estimate says so.
        rows = min(height, rows_per_strip(width, factor_y) + 2 * margin_rows(size, target))
        strips = 3 * width * rows  # cropped, converted, premultiplied or scaled
        horizontal_pass = horizontal_pass if reduced else target[0] * rows
    return 4 * (reduced + strips + horizontal_pass + target[0] * target[1])


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
    if image.format in JPEG_FORMATS and image.info.get("progressive"):
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
