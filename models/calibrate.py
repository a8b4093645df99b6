"""Calibration images: the hard set's calibration photos, and the older composites.

The build calibrates on models/hardset/calibration/ (18 real photos across
the hard set's categories; never a held-out photo, see its LICENSES.md),
each fed exactly as the service and rembg feed it (reference.reference_input:
LANCZOS, divided by the image's brightest value). Calibrated there, the
default recipe took 5 -> 7-9 of 23 held-out photos within issue 11's targets
(models/README.md). The composites are fed the same way.

The first calibration set, kept for models/explore.py's table, was one
photographed subject (the camera man, cut out with a committed alpha mask)
in front of colour-tinted textures: sharp, blurred like a portrait's
background, and smaller in the frame. Every sample of both sets is derived
by fixed, seed-free operations, so the quantised model is the same on every
machine.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter, ImageOps

from models import reference
from models.manifest import COMPOSITES_DIR, calibration_photos

SUBJECT, SUBJECT_ALPHA = "camera.png", "camera_alpha.png"
BLUR_RADIUS_PX = 6  # on the 384 px composite: a portrait lens's soft background
SMALL_SUBJECT = 0.6  # the subject's size in the "smaller in the frame" variant
# Tints that turn the greyscale textures into plausible colour backgrounds
# (brick red, grass green, sand); the model is fed RGB and most photos are colour.
TINTS = {
    "brick.png": (200, 110, 90),
    "grass.png": (110, 170, 80),
    "gravel.png": (190, 170, 140),
}


def _open(name: str, directory: Path) -> Image.Image:
    with Image.open(directory / name) as image:
        image.load()
        return image


def _tint(grey: Image.Image, rgb: tuple[int, int, int]) -> Image.Image:
    return ImageOps.colorize(grey.convert("L"), black=(0, 0, 0), white=rgb)


def _centre_crop(image: Image.Image, fraction: float) -> Image.Image:
    width, height = image.size
    crop_w, crop_h = round(width * fraction), round(height * fraction)
    left, top = (width - crop_w) // 2, (height - crop_h) // 2
    return image.crop((left, top, left + crop_w, top + crop_h))


def _composite(subject: Image.Image, alpha: Image.Image, background: Image.Image, scale: float = 1.0) -> Image.Image:
    """The subject pasted over a background with its known alpha, bottom-centred,
    `scale` times its own size; the result has the subject's size."""
    size = subject.size
    background = background.convert("RGB").resize(size, Image.BILINEAR)
    if scale != 1.0:
        small = (round(size[0] * scale), round(size[1] * scale))
        subject, alpha = subject.resize(small, Image.BILINEAR), alpha.convert("L").resize(small, Image.BILINEAR)
        offset = ((size[0] - small[0]) // 2, size[1] - small[1])
        background.paste(subject.convert("RGB"), offset, alpha)
        return background
    return Image.composite(subject.convert("RGB"), background, alpha.convert("L"))


def camera_composites(directory: Path = COMPOSITES_DIR) -> Iterator[tuple[str, Image.Image]]:
    """The first calibration set, as (label, image) pairs: the camera photo,
    its mirror and a 70% centre crop; then for each tinted texture the
    subject over it sharp, sharp and mirrored, over it blurred, and smaller."""
    subject, alpha = _open(SUBJECT, directory), _open(SUBJECT_ALPHA, directory)
    yield SUBJECT, subject
    yield f"{SUBJECT}:mirror", ImageOps.mirror(subject)
    yield f"{SUBJECT}:crop70", _centre_crop(subject, 0.7)
    for name, rgb in TINTS.items():
        background = _tint(_open(name, directory), rgb)
        sharp = _composite(subject, alpha, background)
        yield f"{SUBJECT}+{name}", sharp
        yield f"{SUBJECT}+{name}:mirror", ImageOps.mirror(sharp)
        blurred = background.resize(subject.size, Image.BILINEAR).filter(ImageFilter.GaussianBlur(BLUR_RADIUS_PX))
        yield f"{SUBJECT}+{name}:blur", _composite(subject, alpha, blurred)
        yield f"{SUBJECT}+{name}:small", _composite(subject, alpha, background, SMALL_SUBJECT)


def calibration_inputs(paths: list[Path] | None = None) -> Iterator[np.ndarray]:
    """Model inputs for every calibration photo (or `paths`), one at a time
    (12 MB each), made as rembg makes them."""
    for path in calibration_photos() if paths is None else paths:
        with Image.open(path) as photo:
            yield reference.reference_input(photo.convert("RGB"))
