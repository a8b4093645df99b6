"""Pictures to the bytes of an answer: PNG (png.py), JPEG or WebP."""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image

from . import png
from .errors import OutputTooLarge


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


# libwebp's lossless encoder works on the whole picture with copies of its
# own: 23 bytes a pixel beside the image (100 MB at 4 MP, 183 MB at 8 MP,
# measured in a child's VmHWM). A full-resolution WebP answer above this is
# refused (413); PNG, written a band at a time, has no such limit.
WEBP_MAX_PIXELS = 4_000_000


def check_encodable(size: tuple[int, int], image_format: str) -> None:
    """Refuse, before any work, an answer its encoder cannot make within budget."""
    width, height = size
    if image_format == "WEBP" and width * height > WEBP_MAX_PIXELS:
        longest_px = int(max(width, height) * (WEBP_MAX_PIXELS / (width * height)) ** 0.5)
        raise OutputTooLarge(
            f"A WebP answer is limited to {WEBP_MAX_PIXELS} pixels (its encoder holds "
            f"several copies of the picture); this one would be {width}x{height} px. "
            f"Ask for format=png, or max_dimension={longest_px} or less.")


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
    if image.mode != "RGB" and (image_format == "JPEG" or (
            image_format == "WEBP" and image.mode == "L")):
        # JPEG has no alpha; WebP has no greyscale mode. PERF: an RGB image
        # is not copied (a 24 MP one is 96 MB).
        image = image.convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, image_format, **ENCODINGS[image_format].save_args)
    return buffer.getvalue()
