"""Calibration images for the static part: committed photos plus augmentations.

The photos in models/calibration/ are small on purpose (they are committed);
every sample is derived from them by fixed, seed-free operations, so the set,
and with it the quantised model, is the same on every machine. astronaut.png
and coffee.png are deliberately absent: they are the held-out photos of the
service's tests.

Every sample has a subject, because ranges are measured around the subject
(see ranges.py); a photo without one (a bare texture, the Hubble deep field)
would contribute nothing. The one photographed subject is the camera man, so
variety comes from putting him, cut out with a committed alpha mask, in front
of colour-tinted textures: sharp, blurred like a portrait's background, and
smaller in the frame.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter, ImageOps

CALIBRATION_DIR = Path(__file__).resolve().parent / "calibration"
INPUT_SIZE_PX = 1024
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


def to_input(image: Image.Image, size_px: int = INPUT_SIZE_PX) -> np.ndarray:
    """The model's input: RGB resized to size_px square, x/255 - 0.5, NCHW float32."""
    rgb = image.convert("RGB").resize((size_px, size_px), Image.BILINEAR)
    array = np.asarray(rgb, dtype=np.float32) / 255.0 - 0.5
    return np.ascontiguousarray(array.transpose(2, 0, 1)[None])


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


def calibration_images(directory: Path = CALIBRATION_DIR) -> Iterator[tuple[str, Image.Image]]:
    """(label, image) pairs: the camera photo, its mirror and a 70% centre
    crop; then for each tinted texture the subject over it sharp, sharp and
    mirrored, over it blurred, and smaller in the frame."""
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


def calibration_inputs(directory: Path = CALIBRATION_DIR) -> Iterator[np.ndarray]:
    """Model inputs for every calibration sample, one at a time (12 MB each)."""
    for _, image in calibration_images(directory):
        yield to_input(image)
