"""Resizing in bands: Pillow's whole-image pixels, whatever the cut."""

import numpy as np
import pytest
from PIL import Image

from isnet_wsgi.image import resize
from isnet_wsgi.image.resize import resized, resized_bands
from tests.helpers import open_image, photo_bytes


def photo(mode: str, size: tuple[int, int]) -> Image.Image:
    image = open_image(photo_bytes("astronaut.png")).convert("RGBA")
    image.putalpha(open_image(photo_bytes("camera.png")).convert("L").resize(image.size))
    return image.resize(size, Image.Resampling.BICUBIC).convert(mode)


SHAPES = [
    ((1024, 683), (1024, 1024)),   # as wide as the target: the vertical pass alone
    ((683, 1024), (1024, 1024)),   # as tall: the horizontal pass alone
    ((1024, 1024), (1024, 683)),   # the mask brought back to a landscape photo
    ((1024, 1024), (893, 1024)),
    ((600, 400), (1024, 1024)),    # both passes, rows first (as Pillow takes them)
    ((1024, 1024), (512, 480)),    # the mask back to a small upload
    ((900, 1000), (880, 300)),     # the height shrinks most: columns first
    ((37, 1), (37, 5)), ((1, 9), (4, 9)), ((5, 3), (2, 7)),
]


@pytest.mark.parametrize("source_size, size", SHAPES)
@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA"])
@pytest.mark.parametrize("threads", [2, 3, 8])
def test_bands_are_pillows_whole_image_resize(source_size, size, mode, threads):
    image = photo(mode, source_size)
    for resample in (Image.Resampling.LANCZOS, Image.Resampling.BILINEAR):
        expected = image.resize(size, resample)
        got = resized(image, size, resample, threads)
        assert (got.mode, got.size) == (expected.mode, expected.size)
        assert got.tobytes() == expected.tobytes()


@pytest.mark.parametrize("source_size, size", SHAPES)
def test_the_bands_tile_the_result(source_size, size):
    bands = resized_bands(photo("RGB", source_size), size, Image.Resampling.LANCZOS, 3)
    covered = np.zeros(size[::-1], int)
    for (left, top), band in bands:
        covered[top:top + band.height, left:left + band.width] += 1
    assert (covered == 1).all()
    # The last pass is cut across: rows for a horizontal one, columns for a vertical one.
    last_horizontal = source_size[1] == size[1] or (
        source_size[0] != size[0] and not resize.horizontal_first(source_size, size))
    assert len(bands) == min(3, size[1] if last_horizontal else size[0])


def test_rgba_in_both_passes_is_resized_whole():
    """Pillow premultiplies RGBA around both passes at once: they stay together."""
    image = photo("RGBA", (600, 400))
    assert len(resized_bands(image, (1024, 1024), Image.Resampling.LANCZOS, 2)) == 1
    assert len(resized_bands(image, (1024, 400), Image.Resampling.LANCZOS, 2)) == 2


def test_one_thread_or_the_same_size_is_one_band():
    image = photo("RGB", (640, 480))
    assert len(resized_bands(image, (640, 300), Image.Resampling.LANCZOS, 1)) == 1
    assert resized_bands(image, (640, 480), Image.Resampling.LANCZOS, 4) == [((0, 0), image)]
