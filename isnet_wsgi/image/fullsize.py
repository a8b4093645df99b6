"""Full-resolution answers a band of rows at a time, in the decoded photo's own buffer.

Above the model's 1024x1024 the photo is held once: the model runs on a
reduced decode, the mask comes back to full size in bands (LANCZOS, as
rembg), and the answer is composited band by band into the decoded photo
itself, so a 24 MP request holds one 4-byte image (96 MB), one 1-byte mask
(24 MB) and a few 1 MB bands. Every band is what compose.py's whole-image
function gives for those rows: exactly, but where a background is scaled
(0.08 level on average, its bands' boxes starting mid-pixel) or a wide blur
made at a reduced size (0.5): tests/test_full_resolution.py.
"""

from __future__ import annotations

from typing import Callable

from PIL import Image

from ..runtime.parallel import map_in_threads
from . import compose
from .resize import horizontal_first

# Source bytes per band (at 4 bytes a pixel): each copy a band makes (crop,
# composite, paste) is about this big. PERF: 4 MB bands held 271 / 371 MB at
# 25 MP (remove, PNG; no arena / arena), 1 MB bands 257 / 360 (one child each).
BAND_BYTES = 1024 * 1024

# A background file (bg_file) behind a full-resolution photo is decoded at
# most this long, then scaled up to the photo a band at a time: held through
# inference and the photo's decode, a 24 MP background would be 96 MB more;
# at 3072 px a 24 MP request peaked at 316 MB (no arena), over budget.
BACKGROUND_MAX_PX = 2048

# Blur radii up to this are blurred exactly, band by band, at full size;
# larger ones at a reduced size where the radius is about REDUCED_BLUR_RADIUS_PX.
EXACT_BLUR_MAX_RADIUS_PX = 16.0
REDUCED_BLUR_RADIUS_PX = 4.0

Span = tuple[int, int]  # (top, bottom) rows of a band


def band_spans(size: tuple[int, int], bytes_per_pixel: int = 4, min_rows: int = 1) -> list[Span]:
    """(top, bottom) of the bands that tile an image of ``size``, top to bottom."""
    width, height = size
    rows = max(min_rows, BAND_BYTES // (bytes_per_pixel * width))
    return [(top, min(height, top + rows)) for top in range(0, height, rows)]


def upscaled_mask(mask: Image.Image, size: tuple[int, int], *, threads: int = 1) -> Image.Image:
    """Pillow's ``mask.resize(size, LANCZOS)``, its second pass a band at a time.

    Pillow resizes in two passes (resize.py); the first, to the mask's
    other side (a few MB), is made whole, and the second in bands cut across
    it (columns of a vertical pass, rows of a horizontal one), ``threads``
    bands at once: each band is exactly the whole resize's, and the only
    full-size buffer is the result (1 byte a pixel), not a second one of bands.
    """
    width, height = size
    if horizontal_first(mask.size, size):
        between = mask.resize((width, mask.height), Image.Resampling.LANCZOS)
        step = max(1, BAND_BYTES // height)
        boxes = [(left, 0, min(width, left + step), mask.height) for left in range(0, width, step)]
    else:
        between = mask.resize((mask.width, height), Image.Resampling.LANCZOS)
        step = max(1, BAND_BYTES // width)
        boxes = [(0, top, mask.width, min(height, top + step)) for top in range(0, height, step)]
    result = Image.new("L", size)

    def band(box: tuple[int, int, int, int]) -> tuple[tuple[int, int], Image.Image]:
        left, top, right, bottom = box
        part = between.crop(box)
        if part.height == mask.height:  # columns: the vertical pass
            return (left, 0), part.resize((right - left, height), Image.Resampling.LANCZOS)
        return (0, top), part.resize((width, bottom - top), Image.Resampling.LANCZOS)

    for first in range(0, len(boxes), threads):
        for corner, part in map_in_threads(band, boxes[first:first + threads]):
            result.paste(part, corner)
    return result


def subject_box(mask: Image.Image, margin_px: int = 0) -> tuple[int, int, int, int] | None:
    """compose.subject_box, read a band at a time: no full-size thresholded copy."""
    found = []
    for top, bottom in band_spans(mask.size, bytes_per_pixel=1):
        box = compose.subject_box(mask.crop((0, top, mask.width, bottom)))
        if box is not None:
            found.append((box[0], top + box[1], box[2], top + box[3]))
    if not found:
        return None
    width, height = mask.size
    return (max(0, min(box[0] for box in found) - margin_px),
            max(0, found[0][1] - margin_px),
            min(width, max(box[2] for box in found) + margin_px),
            min(height, found[-1][3] + margin_px))


def cutout_in_place(image: Image.Image, mask: Image.Image) -> Image.Image:
    """compose.cutout, written over ``image`` (RGB or RGBA) band by band: RGBA.

    NOTE: an RGB image already takes 4 bytes a pixel in Pillow, so it
    becomes RGBA without a copy (putalpha); its alpha, 255, multiplied by
    the mask is the mask itself.
    """
    if image.mode == "RGB":
        image.putalpha(255)
    for top, bottom in band_spans(image.size):
        box = (0, top, image.width, bottom)
        image.paste(compose.cutout(image.crop(box), mask.crop(box)), box)
    return image


def on_color_in_place(image: Image.Image, mask: Image.Image,
                      rgb: tuple[int, int, int]) -> Image.Image:
    """compose.on_color written over ``image``; RGB pixels (an RGBA image's alpha is 255)."""
    return _composited_in_place(image, mask, lambda span, band: Image.new("RGB", band.size, rgb))


def on_cover_in_place(image: Image.Image, mask: Image.Image,
                      background: Image.Image) -> Image.Image:
    """compose.on_background onto compose.cover(background, image.size), in place:
    the background is scaled a band of rows at a time, never whole."""
    if background.mode != "RGB":  # NOTE: convert() copies even an RGB image
        background = background.convert("RGB")
    crop = cover_box(background.size, image.size)
    scale_y = (crop[3] - crop[1]) / image.height

    def covered(span: Span, band: Image.Image) -> Image.Image:
        top, bottom = span
        return background.resize(band.size, Image.Resampling.LANCZOS,
                                 box=(crop[0], crop[1] + top * scale_y,
                                      crop[2], crop[1] + bottom * scale_y))
    return _composited_in_place(image, mask, covered)


def on_blur_in_place(image: Image.Image, mask: Image.Image, radius_px: float) -> Image.Image:
    """compose.on_background onto compose.blurred(image, radius_px), in place.

    Each band is blurred with the rows the blur reaches either side; those
    above it were overwritten already, so their original pixels are kept
    from the band before (``carried``). A radius above EXACT_BLUR_MAX_RADIUS_PX
    reaches too far for that (radius 100 at 25 MP, 4 MB bands: 334 MB without
    the arena): the photo is reduced by whole blocks until the radius is about
    REDUCED_BLUR_RADIUS_PX (1/4 the size or less), blurred there and scaled
    back up in bands (257 MB); such a blur has no detail the reduction could
    lose: within 0.5 level on average, 7 at most, of the whole-image blur
    (radii 16.5-100, tests/test_full_resolution.py).
    """
    if radius_px > EXACT_BLUR_MAX_RADIUS_PX:
        factor = int(radius_px // REDUCED_BLUR_RADIUS_PX)
        background = compose.blurred(image.reduce(factor), radius_px / factor)
        return on_cover_in_place(image, mask, background)
    reach = blur_reach_rows(radius_px)
    carried: list[Image.Image] = []  # the original rows just above the band

    def blurred(span: Span, band: Image.Image) -> Image.Image:
        top, bottom = span
        below = image.crop((0, bottom, image.width, min(image.height, bottom + reach)))
        above = carried.pop() if carried else None
        above_rows = above.height if above is not None else 0
        source = Image.new(image.mode, (image.width, above_rows + band.height + below.height))
        if above is not None:
            source.paste(above, (0, 0))
        source.paste(band, (0, above_rows))
        source.paste(below, (0, above_rows + band.height))
        del above, below  # in the source now: not held while it is blurred
        keep = min(reach, above_rows + band.height)
        carried.append(source.crop((0, above_rows + band.height - keep, image.width,
                                    above_rows + band.height)))
        return compose.blurred(source, radius_px).crop(
            (0, above_rows, image.width, above_rows + band.height))
    # PERF: bands at least twice the reach tall, so a band blurs at most
    # twice its own rows (1 MB bands of a 25 MP photo are 41 rows).
    return _composited_in_place(image, mask, blurred,
                                band_spans(image.size, min_rows=2 * reach))


def _composited_in_place(image: Image.Image, mask: Image.Image,
                         background: Callable[[Span, Image.Image], Image.Image],
                         spans: list[Span] | None = None) -> Image.Image:
    for span in spans or band_spans(image.size):
        box = (0, span[0], image.width, span[1])
        band = image.crop(box)
        image.paste(compose.on_background(band, mask.crop(box), background(span, band)), box)
    return image


def blur_reach_rows(radius_px: float) -> int:
    """Rows a Pillow GaussianBlur of this radius reads either side of a pixel:
    three box passes (BoxBlur.c), each of about the radius, rounded up, plus one."""
    return 3 * (int(radius_px) + 2)


def cover_box(size: tuple[int, int], target: tuple[int, int]) -> tuple[float, float, float, float]:
    """The centred part of an image of ``size`` with ``target``'s aspect:
    the box ImageOps.fit (compose.cover) resizes."""
    width, height = size
    live_ratio = width / height
    output_ratio = target[0] / target[1]
    if live_ratio == output_ratio:
        return 0.0, 0.0, float(width), float(height)
    if live_ratio > output_ratio:
        crop_width = output_ratio * height
        left = (width - crop_width) * 0.5
        return left, 0.0, left + crop_width, float(height)
    crop_height = width / output_ratio
    top = (height - crop_height) * 0.5
    return 0.0, top, float(width), top + crop_height


