"""remove.bg's answer made from one upload: decoded, masked and composed
through the same Pipeline (limits, decode budget, model) as /api/bg/remove."""

from __future__ import annotations

import io
import zipfile

from PIL import Image

from ..image import compose
from ..image.decode import declared_size
from ..image.encode import ENCODINGS, encode
from ..pipeline import Output, Pipeline, foreground_box
from .removebg_options import RemoveBgOptions, margin_box, max_dimension_for

# The file name of every answer (remove.bg's own), by extension.
PREFIX = "no-bg"


def render(pipeline: Pipeline, data: bytes, background_data: bytes | None,
           options: RemoveBgOptions, *, timeout_s: float | None) -> Output:
    # remove.bg's size is in pixels: the long side that keeps the answer within them.
    size = declared_size(data, formats=pipeline.formats,
                         max_pixels=pipeline.settings.max_image_pixels)
    image = pipeline.decode(data, max_dimension_for(size, options.max_pixels,
                                                   pipeline.settings.max_dimension_px))
    background = None
    if background_data is not None:
        # Decoded before inference, so a bad file costs no model run.
        background = compose.cover(pipeline.decode(background_data), image.size)
    mask = pipeline.mask(image, refine=options.refine, timeout_s=timeout_s)
    subject = compose.subject_box(mask)
    origin = (0, 0)
    if options.crop and subject is not None:  # no subject: nothing to crop to
        box = margin_box(subject, options.crop_margin, image.size)
        image, mask, origin = image.crop(box), mask.crop(box), box[:2]
        background = background.crop(box) if background is not None else None
    foreground = foreground_box(subject, origin)
    threads = pipeline.threads
    if options.image_format == "zip":
        return Output(_zip(image, mask, threads), "application/zip", PREFIX, "zip",
                      image.size, foreground)
    picture = _picture(image, mask, background, options)
    # auto: PNG for transparency, and for a mask (JPEG would blur its edges).
    lossless = picture.mode in ("RGBA", "L")
    image_format = {"png": "PNG", "jpg": "JPEG"}.get(options.image_format,
                                                     "PNG" if lossless else "JPEG")
    encoding = ENCODINGS[image_format]
    return Output(encode(picture, image_format, threads=threads), encoding.media_type, PREFIX,
                  encoding.extension, picture.size, foreground)


def _picture(image: Image.Image, mask: Image.Image, background: Image.Image | None,
             options: RemoveBgOptions) -> Image.Image:
    if options.channels == "alpha":
        return mask
    if background is not None:
        return compose.on_background(image, mask, background)
    if options.bg_color is None:
        return compose.cutout(image, mask)
    *rgb, alpha = options.bg_color
    if alpha == 255:
        return compose.on_color(image, mask, tuple(rgb))
    # A translucent colour: the answer keeps an alpha channel (PNG under auto).
    return Image.alpha_composite(Image.new("RGBA", image.size, options.bg_color),
                                 compose.cutout(image, mask))


def _zip(image: Image.Image, mask: Image.Image, threads: int) -> bytes:
    """remove.bg's ZIP: color.jpg (the photo's colours) and alpha.png (the mask),
    of one size, for the client to combine."""
    buffer = io.BytesIO()
    # NOTE: stored, not deflated: JPEG and PNG are compressed already.
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("color.jpg", encode(image.convert("RGB"), "JPEG", threads=threads))
        archive.writestr("alpha.png", encode(mask, "PNG", threads=threads))
    return buffer.getvalue()
