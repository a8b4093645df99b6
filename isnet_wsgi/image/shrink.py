"""Decoded images to the pipeline's size and modes, in bounded memory.

A decoded upload may be 25 megapixels of RGBA, 16-bit or float samples.
Pillow's own resize of RGBA or LA first makes a premultiplied copy of the
whole image, and every mode conversion is a whole second image; here both are
done a strip of rows at a time, so the extra memory is a few strips, the
reduced image and the result, which cost.py counts before decoding.
The pixels are those of Pillow's whole-image resize (LANCZOS, reducing_gap).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

# Source bytes per strip (at 4 bytes a pixel): each copy a strip makes (crop,
# mode conversion, premultiplied alpha, float samples) is about this big.
STRIP_BYTES = 4 * 1024 * 1024
# LANCZOS reads 3 source pixels either side per unit of scale.
_LANCZOS_SUPPORT = 3.0
# Shrink by whole factors (a box filter) while the image stays at least this
# many times the target, then LANCZOS: Pillow's reducing_gap, which the
# service used before.
_REDUCING_GAP = 3.0
# Modes Pillow resamples as they are, without a converted copy.
RESAMPLED_AS_IS = ("L", "RGB", "RGBa")


def fit_size(size: tuple[int, int], max_px: int) -> tuple[int, int]:
    """``size`` scaled down (never up) so its long side is at most max_px."""
    width, height = size
    scale = min(1.0, max_px / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def shrunk_rgb_or_rgba(image: Image.Image, target: tuple[int, int]) -> Image.Image:
    """The image as RGB or RGBA, scaled down to ``target`` (fit_size's, or the
    model's own square for the view it runs on)."""
    if target == image.size:
        return rgb_or_rgba(image)
    if image.mode in RESAMPLED_AS_IS:
        return rgb_or_rgba(image.resize(target, Image.Resampling.LANCZOS,
                                        reducing_gap=_REDUCING_GAP))
    working_mode, to_working = _working_mode(image)
    factors = reduce_factors(image.size, target)
    if factors == (1, 1):
        return rgb_or_rgba(_resized_in_strips(image, target, working_mode, to_working))
    width, height = image.size
    reduced = _reduced_in_strips(image, factors, working_mode, to_working)
    # Where the original's edges fall in the reduced image, as in Pillow's resize.
    box = (0, 0, width / factors[0], height / factors[1])
    return rgb_or_rgba(reduced.resize(target, Image.Resampling.LANCZOS, box=box))


def is_high_bit_depth(mode: str) -> bool:
    return mode.startswith("I") or mode == "F"  # I, I;16, I;16B, I;16L, I;16N, F


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "La", "PA", "RGBa") or (
        image.mode == "P" and "transparency" in image.info)


def rgb_or_rgba(image: Image.Image) -> Image.Image:
    """A small (already fitted) image in one of the two modes the pipeline takes."""
    if image.mode in ("RGB", "RGBA"):
        return image
    if is_high_bit_depth(image.mode):
        image = _high_bit_depth_to_grey(image)(image)
    return image.convert("RGBA" if _has_alpha(image) else "RGB")


def _working_mode(image: Image.Image):
    """The mode a large image is resampled in, and how to bring a strip to it.

    Alpha is premultiplied while resampling, as Pillow's resize does;
    greyscale stays one band until the end.
    """
    if is_high_bit_depth(image.mode):
        return "L", _high_bit_depth_to_grey(image)
    if _has_alpha(image):
        return "RGBa", lambda strip: (strip if strip.mode == "RGBA"
                                      else strip.convert("RGBA")).convert("RGBa")
    return "RGB", lambda strip: strip.convert("RGB")


def _high_bit_depth_to_grey(image: Image.Image):
    """A function taking strips of 16-bit or 32-bit greyscale to 8-bit 'L'.

    It scales instead of clipping (Pillow's own convert("L") clips I;16
    values above 255 to white), by the whole image's peak, which getextrema
    reads in place; the float32 arithmetic is one strip at a time.
    """
    if image.mode.startswith("I;16"):
        peak = 65535.0
    else:
        highest = image.getextrema()[1]
        peak = float(highest) if highest == highest and highest > 255 else 255.0
    scale = np.float32(255.0 / max(peak, 1.0))

    def to_grey(strip: Image.Image) -> Image.Image:
        values = np.array(strip, dtype=np.float32)  # a copy: it is scaled in place
        # NaN and infinities (a float TIFF may hold them) become black or white.
        with np.errstate(invalid="ignore", over="ignore"):
            values *= scale
        np.nan_to_num(values, copy=False, nan=0.0, posinf=255.0, neginf=0.0)
        np.clip(values, 0, 255, out=values)
        return Image.fromarray(np.rint(values, out=values).astype(np.uint8), "L")
    return to_grey


def reduce_factors(size: tuple[int, int], target: tuple[int, int]) -> tuple[int, int]:
    return tuple(max(1, int(side / goal / _REDUCING_GAP)) for side, goal in zip(size, target))


def rows_per_strip(width: int, multiple: int = 1) -> int:
    rows = max(1, STRIP_BYTES // (4 * width))
    return max(multiple, rows - rows % multiple)


def margin_rows(size: tuple[int, int], target: tuple[int, int]) -> int:
    return int(_LANCZOS_SUPPORT * max(1.0, size[1] / target[1])) + 2


def _reduced_in_strips(image: Image.Image, factors: tuple[int, int], mode: str,
                       to_working) -> Image.Image:
    """Image.reduce (a box filter), a strip of whole blocks at a time: the same pixels."""
    width, height = image.size
    factor_x, factor_y = factors
    reduced = Image.new(mode, (-(-width // factor_x), -(-height // factor_y)))
    rows = rows_per_strip(width, factor_y)
    for top in range(0, height, rows):
        strip = to_working(image.crop((0, top, width, min(height, top + rows))))
        reduced.paste(strip.reduce(factors), (0, top // factor_y))
    return reduced


def _resized_in_strips(image: Image.Image, size: tuple[int, int], mode: str,
                       to_working) -> Image.Image:
    """LANCZOS to ``size``, a band of output rows at a time.

    Each band reads its source rows plus the filter's reach either side, so
    its pixels are those of the whole-image resize.
    """
    width, height = image.size
    scale_y = height / size[1]
    margin = margin_rows(image.size, size)
    rows = max(1, int(rows_per_strip(width) / scale_y))
    resized = Image.new(mode, size)
    for top in range(0, size[1], rows):
        bottom = min(size[1], top + rows)
        source_top, source_bottom = top * scale_y, bottom * scale_y
        first = max(0, int(source_top) - margin)
        strip = to_working(image.crop((0, first, width, min(height, int(source_bottom) + margin))))
        resized.paste(strip.resize((size[0], bottom - top), Image.Resampling.LANCZOS,
                                   box=(0, source_top - first, width, source_bottom - first)),
                      (0, top))
    return resized
