"""The steps from input bytes to output bytes: decode, mask, compose, encode.

Shared by the HTTP API (web/api.py) and the command line (cli.py), so both make
the same image from the same bytes and options. Nothing here knows about
HTTP: errors are image.errors.InvalidImage subclasses and
model.segmenter.InferenceTimeout.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from PIL import Image

from .config import Settings
from .file_names import split_file_name
from .image import compose
from .image.decode import FORMAT_BY_EXTENSION
from .image.decode import decode as decode_image
from .image.encode import ENCODINGS, encode
from .image.refine import refine_alpha
from .model.segmenter import Segmenter
from .options import ColorOptions, RemoveOptions


@dataclass(frozen=True)
class Output:
    """An encoded result and how to name it: ``<prefix>_<stem>.<extension>``."""

    body: bytes
    content_type: str
    prefix: str
    extension: str
    # The picture's (width, height), px, and the subject's box in it as
    # (left, top, width, height), None when there is none: the X-Width,
    # X-Foreground-* headers of the answer (as remove.bg sends them).
    size: tuple[int, int] | None = None
    foreground: tuple[int, int, int, int] | None = None

    def file_name(self, input_name: str) -> str:
        """``<prefix>_<stem>.<extension>``, the stem taken from the input's name."""
        return f"{self.prefix}_{split_file_name(input_name)[0]}.{self.extension}"


def _output(image: Image.Image, image_format: str, prefix: str, threads: int,
            foreground: tuple[int, int, int, int] | None = None) -> Output:
    encoding = ENCODINGS[image_format]
    return Output(encode(image, image_format, threads=threads),
                  encoding.media_type, prefix, encoding.extension, image.size, foreground)


def foreground_box(subject: tuple[int, int, int, int] | None,
                   origin: tuple[int, int] = (0, 0)) -> tuple[int, int, int, int] | None:
    """A subject box (left, top, right, bottom) as (left, top, width, height)
    from ``origin``, the top left of the picture answered (a crop's)."""
    if subject is None:
        return None
    left, top, right, bottom = subject
    return left - origin[0], top - origin[1], right - left, bottom - top


def accepted_formats(settings: Settings) -> tuple[str, ...]:
    """Pillow's names for the formats of the allowed extensions."""
    return tuple(sorted({FORMAT_BY_EXTENSION[ext] for ext in settings.allowed_extensions
                         if ext in FORMAT_BY_EXTENSION}))


class Pipeline:
    """One settings object and one model; ``remove`` and ``change_color`` per image."""

    def __init__(self, settings: Settings, segmenter: Segmenter, *,
                 observe_inference_s: Callable[[float], None] = lambda seconds: None):
        self.settings = settings
        self.segmenter = segmenter
        self.observe_inference_s = observe_inference_s
        # The cores inference uses are idle while the result is encoded.
        self.threads = settings.intra_op_threads
        self.formats = accepted_formats(settings)

    def decode(self, data: bytes, max_dimension_px: int | None = None) -> Image.Image:
        """The image, scaled so its long side is at most the option or the ceiling."""
        return decode_image(data, formats=self.formats,
                            max_pixels=self.settings.max_image_pixels,
                            max_dimension_px=max_dimension_px or self.settings.max_dimension_px,
                            budget_bytes=self.settings.decode_budget_bytes)

    def mask(self, image: Image.Image, *, refine: bool = False,
             timeout_s: float | None = None) -> Image.Image:
        """The subject's alpha, an 'L' image of the image's size.

        ``refine`` makes the edges follow the image's own (refine.py); it runs
        after inference, once the model's buffers are freed.
        """
        mask = self.segmenter.mask(image, timeout_s=timeout_s)
        self.observe_inference_s(self.segmenter.last_run_s)
        return refine_alpha(image, mask) if refine else mask

    def remove(self, data: bytes, options: RemoveOptions, *,
               timeout_s: float | None = None) -> Output:
        image = self.decode(data, options.max_dimension_px)
        mask = self.mask(image, refine=options.refine, timeout_s=timeout_s)
        subject = compose.subject_box(mask)
        origin = (0, 0)
        if options.crop and subject is not None:  # no subject found: nothing to crop to
            box = compose.subject_box(mask, options.margin_px)
            image, mask, origin = image.crop(box), mask.crop(box), box[:2]
        foreground = foreground_box(subject, origin)
        if options.mask:
            return _output(mask, options.image_format, "mask", self.threads, foreground)
        return _output(compose.cutout(image, mask), options.image_format, "nobg",
                       self.threads, foreground)

    def change_color(self, data: bytes, options: ColorOptions, *,
                     background_data: bytes | None = None,
                     timeout_s: float | None = None) -> Output:
        image = self.decode(data, options.max_dimension_px)
        background = None
        if background_data is not None:
            # Decoded before inference so a bad file costs no model run; at
            # most MAX_DIMENSION px, then fitted to the (already scaled) photo.
            background = compose.cover(self.decode(background_data), image.size)
        mask = self.mask(image, refine=options.refine, timeout_s=timeout_s)
        if background is None and options.blur_radius_px is not None:
            background = compose.blurred(image, options.blur_radius_px)
        if background is None:
            composite = compose.on_color(image, mask, options.rgb)
        else:
            composite = compose.on_background(image, mask, background)
        return _output(composite, options.image_format, "color", self.threads,
                       foreground_box(compose.subject_box(mask)))
