"""Images in and out: decode and validate, resize, compose, encode.

Everything here works on bytes and Pillow images in memory; nothing touches
the disk. Errors are ``InvalidImage`` subclasses that the app maps to 4xx.
"""

from __future__ import annotations

import io
import re
import struct
import warnings
from dataclasses import dataclass

from PIL import Image, ImageChops, ImageFilter, ImageOps

from . import png, pngdecode, shrink

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
# Mask values at or below this count as background when cropping: the
# min-max normalised output leaves faint noise (1-5) far from the subject.
SUBJECT_THRESHOLD = 16


class InvalidImage(ValueError):
    """The upload is not an image we can process (400)."""

    code = "invalid_image"


class UnsupportedImage(InvalidImage):
    """The upload is an image in a format we do not accept (415)."""

    code = "unsupported_image"


class ImageTooLarge(InvalidImage):
    """The image declares more pixels than the budget (413)."""

    code = "image_too_large"


class DecodeBudgetExceeded(ImageTooLarge):
    """Decoding the image would take more memory than the budget (413)."""

    code = "decode_budget_exceeded"


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


# A point() table: 255 where a pixel shows at all, 0 where it is fully transparent.
_VISIBLE = [0] + [255] * 255


def _alpha(image: Image.Image, mask: Image.Image) -> Image.Image:
    """The mask, multiplied by the image's own alpha where it has one."""
    if image.mode == "RGBA":
        return ImageChops.multiply(image.getchannel("A"), mask)
    return mask


def cutout(image: Image.Image, mask: Image.Image) -> Image.Image:
    """The subject on transparency: the mask becomes the alpha channel.

    An input that had its own alpha keeps it where the mask is opaque.
    Fully transparent pixels are (0, 0, 0, 0), as in rembg's cut-outs: their
    colour is invisible, and the PNG is about half the size for it.
    """
    alpha = _alpha(image, mask)
    result = Image.new("RGBA", image.size, (0, 0, 0, 0))
    # PERF: Pillow, not numpy: its masked paste is 4x faster than boolean indexing.
    result.paste(image if image.mode == "RGB" else image.convert("RGB"),
                 mask=alpha.point(_VISIBLE))
    result.putalpha(alpha)
    return result


def on_background(image: Image.Image, mask: Image.Image,
                  background: Image.Image) -> Image.Image:
    """The subject alpha-composited onto an RGB background of the same size."""
    return Image.composite(image.convert("RGB"), background, _alpha(image, mask))


def on_color(image: Image.Image, mask: Image.Image, rgb: tuple[int, int, int]) -> Image.Image:
    """The subject alpha-composited onto a solid colour (soft edges blend)."""
    return on_background(image, mask, Image.new("RGB", image.size, rgb))


def blurred(image: Image.Image, radius_px: float) -> Image.Image:
    """The image itself, Gaussian-blurred: a background that keeps the scene."""
    return image.convert("RGB").filter(ImageFilter.GaussianBlur(radius_px))


def cover(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Scale and centre-crop to exactly ``size``, filling it (CSS object-fit: cover)."""
    return ImageOps.fit(image.convert("RGB"), size, Image.Resampling.LANCZOS)


def subject_box(mask: Image.Image, margin_px: int = 0) -> tuple[int, int, int, int] | None:
    """The subject's bounding box plus a margin, clamped to the image; None if no subject."""
    box = mask.point(lambda value: 255 if value > SUBJECT_THRESHOLD else 0).getbbox()
    if box is None:
        return None
    left, top, right, bottom = box
    width, height = mask.size
    return (max(0, left - margin_px), max(0, top - margin_px),
            min(width, right + margin_px), min(height, bottom + margin_px))


@dataclass(frozen=True)
class Encoding:
    """An output format: how Pillow writes it, and how the answer names it."""

    media_type: str
    extension: str  # of the download, and the format option's short name
    save_args: dict


# Every format the service writes, by Pillow's name.
ENCODINGS = {
    # PNG output is written by png.py (4x faster than Pillow's encoder);
    # these arguments are for the modes it does not write. Level 1: on a
    # 1024-px cut-out, level 6 (Pillow's default) took 0.42 s, level 1 0.084 s.
    "PNG": Encoding("image/png", "png", {"compress_level": 1}),
    "JPEG": Encoding("image/jpeg", "jpg", {"quality": 90}),
    # Lossless keeps the alpha and the colours exact, like PNG, in ~40% fewer
    # bytes. PERF: in lossless mode quality is effort; 0 with method 3 takes
    # ~0.3 s on 1024 px and is within 1% of the size of the slowest setting.
    "WEBP": Encoding("image/webp", "webp", {"lossless": True, "quality": 0, "method": 3}),
}


def format_names(*image_formats: str) -> dict[str, str]:
    """What a client may call each of these output formats: 'jpeg' and 'jpg' -> 'JPEG'."""
    names = {}
    for image_format in image_formats:
        names[image_format.lower()] = image_format
        names[ENCODINGS[image_format].extension] = image_format
    return names


def encode(image: Image.Image, image_format: str, *, threads: int = 1) -> bytes:
    """The image in the format; ``threads`` may share PNG's compression."""
    if image_format not in ENCODINGS:
        raise ValueError(f"cannot encode {image_format}")
    if image_format == "PNG" and image.mode in png.COLOUR_TYPES:
        return png.encode(image, threads=threads)
    if image_format == "JPEG" or (image_format == "WEBP" and image.mode == "L"):
        # JPEG has no alpha; WebP has no greyscale mode.
        image = image.convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, image_format, **ENCODINGS[image_format].save_args)
    return buffer.getvalue()


_HEX_COLOR = re.compile(r"#?([0-9a-fA-F]{6}|[0-9a-fA-F]{3})")
# NOTE: [0-9], not \d, which takes any script's digits ("２５５"): numerals.py's rule.
_RGB_TRIPLE = re.compile(r"([0-9]{1,3})\s*,\s*([0-9]{1,3})\s*,\s*([0-9]{1,3})")


def parse_color(text: str) -> tuple[int, int, int]:
    """'#RRGGBB', '#RGB' or 'R,G,B' (0-255 each) to an RGB tuple; ValueError otherwise."""
    text = text.strip()
    if match := _HEX_COLOR.fullmatch(text):
        digits = match.group(1)
        if len(digits) == 3:
            digits = "".join(d * 2 for d in digits)
        return tuple(int(digits[i:i + 2], 16) for i in (0, 2, 4))
    if match := _RGB_TRIPLE.fullmatch(text):
        rgb = tuple(int(part) for part in match.groups())
        if all(0 <= part <= 255 for part in rgb):
            return rgb
        raise ValueError(f"color components must be 0-255, got {text!r}")
    raise ValueError(f"not a color: {text!r}; use #RRGGBB, #RGB or R,G,B")
