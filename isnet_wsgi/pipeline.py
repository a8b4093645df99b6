"""The steps from input bytes to output bytes: decode, mask, compose, encode.

Shared by the HTTP API (web/api.py) and the command line (cli.py), so both make
the same image from the same bytes and options. Nothing here knows about
HTTP: errors are image.errors.InvalidImage subclasses and
model.segmenter.InferenceTimeout.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Callable, Iterator

from PIL import Image

from .config import Settings
from .file_names import split_file_name
from .image import compose, fullsize
from .image.decode import FORMAT_BY_EXTENSION, fitted_size
from .image.decode import decode as decode_image
from .image.encode import ENCODINGS, check_encodable, encode
from .image.png import encode_in_bands
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
    # A full-resolution PNG: its bytes made as they are sent, ``body`` empty.
    stream: Iterator[bytes] | None = None

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


def _full_output(image: Image.Image, image_format: str, prefix: str, threads: int, *,
                 mode: str, box: tuple[int, int, int, int] | None = None,
                 foreground: tuple[int, int, int, int] | None = None,
                 stream: bool = False) -> Output:
    """A full-resolution answer: PNG streamed a band at a time, JPEG and WebP whole.

    ``mode`` is the answer's ("RGB" of a composite left in an RGBA buffer).
    """
    encoding = ENCODINGS[image_format]
    size = (box[2] - box[0], box[3] - box[1]) if box else image.size
    if image_format == "PNG":
        parts = encode_in_bands(image, mode=mode, box=box, threads=threads)
        if stream:
            return Output(b"", encoding.media_type, prefix, encoding.extension, size,
                          foreground, parts)
        body = io.BytesIO()  # PERF: getvalue() hands over its buffer without a copy
        for part in parts:
            body.write(part)
        return Output(body.getvalue(), encoding.media_type, prefix, encoding.extension,
                      size, foreground)
    if box is not None:
        image = image.crop(box)
    if image.mode != mode:
        image = image.convert(mode)
    return Output(encode(image, image_format, threads=threads),
                  encoding.media_type, prefix, encoding.extension, size, foreground)


def accepted_formats(settings: Settings) -> tuple[str, ...]:
    """Pillow's names for the formats of the allowed extensions."""
    return tuple(sorted({FORMAT_BY_EXTENSION[ext] for ext in settings.allowed_extensions
                         if ext in FORMAT_BY_EXTENSION}))


class Pipeline:
    """One settings object and one model; ``remove`` and ``change_color`` per image."""

    def __init__(self, settings: Settings, segmenter: Segmenter, *,
                 observe_inference_s: Callable[[float], None] = lambda seconds: None,
                 stream: bool = False):
        self.settings = settings
        # Whether a full-resolution PNG is handed over as Output.stream (the
        # caller sends it as it is made) or joined into Output.body.
        self.stream = stream
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

    def full_resolution_size(self, data: bytes, max_dimension_px: int | None,
                             image_format: str) -> tuple[int, int] | None:
        """The answer's size when it is larger than the model's input (then it
        is made a band at a time: image/fullsize.py), else None; never at the
        default 1024 px. An answer its encoder cannot make within budget is
        refused here, first."""
        ceiling_px = max_dimension_px or self.settings.max_dimension_px
        size = fitted_size(data, formats=self.formats, max_pixels=self.settings.max_image_pixels,
                           max_dimension_px=ceiling_px)
        model_width, model_height = self.segmenter.input.size_px
        if size[0] * size[1] <= model_width * model_height:
            return None
        check_encodable(size, image_format)
        # The full decode's budget, before the reduced one and inference.
        fitted_size(data, formats=self.formats, max_pixels=self.settings.max_image_pixels,
                    max_dimension_px=ceiling_px, budget_bytes=self.settings.decode_budget_bytes)
        return size

    def full_size_masked(self, data: bytes, size: tuple[int, int], max_dimension_px: int | None,
                         *, refine: bool = False, timeout_s: float | None = None):
        """The full-size image (``size``, from full_resolution_size) and its
        full-size mask, the photo held once.

        PERF: the model runs on a reduced decode of exactly its input's size
        (a JPEG drafted at 1/2-1/8), and the full image is decoded only
        after inference, once the session's buffers are free. ``refine``
        works at the model's size, before the mask is brought up.
        """
        ceiling_px = max_dimension_px or self.settings.max_dimension_px
        view = decode_image(data, formats=self.formats,
                            max_pixels=self.settings.max_image_pixels,
                            max_dimension_px=ceiling_px,
                            budget_bytes=self.settings.decode_budget_bytes,
                            size=self.segmenter.input.size_px)
        small_mask = self.mask(view, refine=refine, timeout_s=timeout_s)
        del view
        # PERF: the mask is brought up before the photo is decoded, so the
        # resize's passing buffers (~15 MB at 24 MP) never sit on top of it.
        mask = fullsize.upscaled_mask(small_mask, size, threads=self.threads)
        image = self.decode(data, max_dimension_px)
        if image.size != mask.size:  # a turn the header did not declare
            del mask
            mask = fullsize.upscaled_mask(small_mask, image.size, threads=self.threads)
        return image, mask

    def remove(self, data: bytes, options: RemoveOptions, *,
               timeout_s: float | None = None) -> Output:
        size = self.full_resolution_size(data, options.max_dimension_px, options.image_format)
        if size is not None:
            return self._remove_full_size(data, size, options, timeout_s)
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

    def _remove_full_size(self, data: bytes, size: tuple[int, int], options: RemoveOptions,
                          timeout_s: float | None) -> Output:
        image, mask = self.full_size_masked(data, size, options.max_dimension_px,
                                            refine=options.refine, timeout_s=timeout_s)
        subject = fullsize.subject_box(mask)
        box = None
        if options.crop and subject is not None:  # no subject found: nothing to crop to
            box = fullsize.subject_box(mask, options.margin_px)
        foreground = foreground_box(subject, box[:2] if box else (0, 0))
        if options.mask:
            return _full_output(mask, options.image_format, "mask", self.threads, mode="L",
                                box=box, foreground=foreground, stream=self.stream)
        return _full_output(fullsize.cutout_in_place(image, mask), options.image_format, "nobg",
                            self.threads, mode="RGBA", box=box, foreground=foreground,
                            stream=self.stream)

    def change_color(self, data: bytes, options: ColorOptions, *,
                     background_data: bytes | None = None,
                     timeout_s: float | None = None) -> Output:
        size = self.full_resolution_size(data, options.max_dimension_px, options.image_format)
        if size is not None:
            return self._change_color_full_size(data, size, options, background_data, timeout_s)
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

    def _change_color_full_size(self, data: bytes, size: tuple[int, int], options: ColorOptions,
                                background_data: bytes | None,
                                timeout_s: float | None) -> Output:
        background = None
        if background_data is not None:
            # Decoded before inference so a bad file costs no model run; at
            # most BACKGROUND_MAX_PX, then scaled to the photo a band at a time.
            background = self.decode(background_data, min(
                fullsize.BACKGROUND_MAX_PX, self.settings.max_dimension_px))
        image, mask = self.full_size_masked(data, size, options.max_dimension_px,
                                            refine=options.refine, timeout_s=timeout_s)
        foreground = foreground_box(fullsize.subject_box(mask))
        if background is not None:
            composite = fullsize.on_cover_in_place(image, mask, background)
        elif options.blur_radius_px is not None:
            composite = fullsize.on_blur_in_place(image, mask, options.blur_radius_px)
        else:
            composite = fullsize.on_color_in_place(image, mask, options.rgb)
        del mask, background
        return _full_output(composite, options.image_format, "color", self.threads,
                            mode="RGB", foreground=foreground, stream=self.stream)
