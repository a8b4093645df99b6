"""Pillow's resize in bands, one per core, to Pillow's own pixels.

Pillow resizes in two passes, horizontal and vertical, and an image that
already has the target's width or height needs only one (an upload no
larger than the model's input, and the mask brought back to it). A
horizontal pass treats each row alone and a vertical one each column, so
cut across the pass (rows for a horizontal pass, columns for a vertical
one) the bands are resized exactly as the whole image is, and Pillow
releases the GIL while it resamples. Images that need both passes are
resized whole: a band of the second pass would need the first's rows
beyond it.
"""

from __future__ import annotations

from PIL import Image

from .parallel import map_in_threads

Band = tuple[tuple[int, int], Image.Image]  # (left, top) in the result, and its pixels


def resized_bands(image: Image.Image, size: tuple[int, int], resample: Image.Resampling,
                  threads: int) -> list[Band]:
    """Pillow's ``image.resize(size, resample)`` as bands that tile it."""
    if image.size == size:
        return [((0, 0), image)]
    width, height = size
    source_width, source_height = image.size
    if threads < 2 or (source_width != width and source_height != height):
        return [((0, 0), image.resize(size, resample))]
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
