"""Pillow's resize in bands, one per core, to Pillow's own pixels.

Pillow resizes in two passes, horizontal and vertical, each into an 8-bit
image, and skips a pass the sizes do not need. A horizontal pass treats
each row alone and a vertical one each column, so cut across the pass (rows
for a horizontal pass, columns for a vertical one) the bands are resized
exactly as the whole image is, and Pillow releases the GIL while it
resamples. An image that needs both passes gets them one after the other,
in the order Pillow itself takes, each cut across.
"""

from __future__ import annotations

from PIL import Image

from ..runtime.parallel import map_in_threads

Band = tuple[tuple[int, int], Image.Image]  # (left, top) in the result, and its pixels
# Modes Pillow resamples as they are; both passes can then be taken apart.
_AS_IS = ("L", "RGB")
# ...and RGBA, which it premultiplies pixel by pixel around the two passes:
# a band is premultiplied as the whole image is, but the passes stay together.
_BY_PIXEL = _AS_IS + ("RGBA",)


def resized_bands(image: Image.Image, size: tuple[int, int], resample: Image.Resampling,
                  threads: int) -> list[Band]:
    """Pillow's ``image.resize(size, resample)`` as bands that tile it."""
    if image.size == size:
        return [((0, 0), image)]
    width, height = size
    source_width, source_height = image.size
    both_passes = source_width != width and source_height != height
    if threads < 2 or image.mode not in (_AS_IS if both_passes else _BY_PIXEL):
        return [((0, 0), image.resize(size, resample))]
    if both_passes:
        between = (width, source_height) if horizontal_first(image.size, size) else (
            source_width, height)
        image = resized(image, between, resample, threads)
        source_width, source_height = between
    # One pass: cut across it, rows for the horizontal pass, columns for the vertical.
    across_rows = source_height == height
    length = height if across_rows else width
    count = min(threads, length)
    cuts = [length * index // count for index in range(count + 1)]

    def band(span: tuple[int, int]) -> Band:
        start, end = span
        if across_rows:
            part = image.crop((0, start, source_width, end))
            return (0, start), part.resize((width, end - start), resample)
        part = image.crop((start, 0, end, source_height))
        return (start, 0), part.resize((end - start, height), resample)

    return map_in_threads(band, list(zip(cuts, cuts[1:])))


def resized(image: Image.Image, size: tuple[int, int], resample: Image.Resampling,
            threads: int = 1) -> Image.Image:
    """Pillow's ``image.resize(size, resample)``, in bands on ``threads`` cores."""
    bands = resized_bands(image, size, resample, threads)
    if len(bands) == 1:
        return bands[0][1]
    result = Image.new(image.mode, size)
    for corner, band in bands:
        result.paste(band, corner)
    return result


def horizontal_first(source_size: tuple[int, int], size: tuple[int, int]) -> bool:
    """Whether Pillow resamples rows before columns (ImagingResampleInner,
    Pillow 13): unless the height shrinks by more than twice what the width does."""
    (source_width, source_height), (width, height) = source_size, size
    shrink = source_height - height
    return not (shrink > 0 and shrink > (source_width - width) * 2)
