"""refine_alpha: the mask follows the image's edges, and nothing else moves."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from isnet_wsgi.image.refine import refine_alpha
from tests.helpers import DATA


def _soft_disk(size: int, radius: int, blur_px: float) -> Image.Image:
    mask = Image.new("L", (size, size), 0)
    centre = size // 2
    ImageDraw.Draw(mask).ellipse(
        (centre - radius, centre - radius, centre + radius, centre + radius), fill=255)
    return mask.filter(ImageFilter.GaussianBlur(blur_px))


def _photo(name: str, size: tuple[int, int]) -> Image.Image:
    with Image.open(DATA / name) as image:
        return image.convert("RGB").resize(size, Image.Resampling.LANCZOS)


@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
@pytest.mark.parametrize("size", [(97, 61), (1, 1), (2, 3), (300, 200)])
def test_output_is_an_l_mask_of_the_image_size(mode, size):
    image = _photo("astronaut.png", size).convert(mode)
    mask = Image.linear_gradient("L").resize(size)

    refined = refine_alpha(image, mask)

    assert refined.mode == "L"
    assert refined.size == size


def test_a_hard_mask_stays_exactly_as_it_was():
    image = _photo("coffee.png", (240, 160))
    mask = Image.new("L", image.size, 0)
    ImageDraw.Draw(mask).rectangle((60, 40, 180, 120), fill=255)

    assert refine_alpha(image, mask).tobytes() == mask.tobytes()


def test_pixels_far_from_a_soft_edge_are_untouched():
    image = _photo("astronaut.png", (256, 256))
    mask = _soft_disk(256, 70, blur_px=3)
    before = np.asarray(mask)
    # Distance from the disk's centre; the soft ramp lies within ~10 px of radius 70.
    yy, xx = np.mgrid[:256, :256]
    distance = np.hypot(xx - 128, yy - 128)
    far = (distance < 30) | (distance > 110)

    after = np.asarray(refine_alpha(image, mask))

    assert np.array_equal(after[far], before[far])
    assert not np.array_equal(after, before)  # the edge itself was refined


@pytest.mark.parametrize("width_px, blur_px", [(256, 2), (512, 3), (1024, 4)])
def test_a_soft_mask_on_a_sharp_image_edge_snaps_to_it(width_px, blur_px):
    # A sharp vertical step in the image at the middle, and a blurred mask centred
    # on it (what the model's resize gives): the refined mask steps where the image
    # steps, much more steeply than before, and the edge does not move.
    height_px, middle = width_px * 3 // 4, width_px // 2
    image = Image.new("RGB", (width_px, height_px), (40, 40, 40))
    ImageDraw.Draw(image).rectangle((middle, 0, width_px, height_px), fill=(220, 220, 220))
    hard = Image.new("L", image.size, 0)
    ImageDraw.Draw(hard).rectangle((middle, 0, width_px, height_px), fill=255)
    soft = hard.filter(ImageFilter.GaussianBlur(blur_px))

    row_before = np.asarray(soft, dtype=float)[height_px // 2]
    row_after = np.asarray(refine_alpha(image, soft), dtype=float)[height_px // 2]

    steps_before, steps_after = np.diff(row_before), np.diff(row_after)
    assert int(np.argmax(steps_after)) == middle - 1  # between middle - 1 and middle
    assert steps_after.max() > 2.5 * steps_before.max()
    assert row_after[middle - 1] < 128 < row_after[middle]
    assert row_after[:middle - 16].max() <= row_before[:middle - 16].max()
    assert row_after[middle + 16:].min() >= row_before[middle + 16:].min()


def test_refinement_recovers_hair_on_a_composite_with_known_alpha():
    # A dark subject with fine hair strands over a real texture: the true alpha is
    # the one we composite with. The model's mask is mimicked by what it suffers
    # from: a 4x-coarser alpha upsampled bilinearly, with the strands smeared out.
    size, scale = (192, 192), 4
    large = Image.new("L", (size[0] * scale, size[1] * scale), 0)
    draw = ImageDraw.Draw(large)
    draw.ellipse((60 * scale, 70 * scale, 132 * scale, 192 * scale), fill=255)
    rng = np.random.default_rng(7)
    for _ in range(120):
        angle = rng.uniform(np.pi * 1.1, np.pi * 1.9)
        x0, y0 = 96 + 36 * np.cos(angle), 131 + 61 * np.sin(angle)
        length = rng.uniform(8, 24)
        x1, y1 = x0 + length * np.cos(angle), y0 + length * np.sin(angle)
        draw.line([(x0 * scale, y0 * scale), (x1 * scale, y1 * scale)], fill=255, width=scale)
    alpha = np.asarray(large.resize(size, Image.Resampling.BOX), dtype=np.float32) / 255
    background = np.asarray(_photo("gravel.png", size), dtype=np.float32) / 255
    background = 0.35 + 0.65 * background  # a light texture, as the bench's tinted ones
    pixels = alpha[..., None] * 0.12 + (1 - alpha[..., None]) * background
    image = Image.fromarray(np.rint(pixels * 255).astype(np.uint8), "RGB")
    coarse = Image.fromarray(np.rint(alpha * 255).astype(np.uint8), "L").resize(
        (size[0] // scale, size[1] // scale), Image.Resampling.BOX)
    unrefined = coarse.resize(size, Image.Resampling.BILINEAR)

    refined = refine_alpha(image, unrefined)

    band = (alpha > 0) & (alpha < 1)
    band |= np.asarray(Image.fromarray(band).filter(ImageFilter.MaxFilter(5)))

    def edge_mae(mask):
        return float(np.abs(np.asarray(mask, dtype=np.float32) / 255 - alpha)[band].mean())

    assert edge_mae(refined) < 0.8 * edge_mae(unrefined)


def test_a_flat_image_gives_no_nans_and_keeps_a_flat_mask():
    image = Image.new("RGB", (80, 60), (128, 128, 128))

    flat = refine_alpha(image, Image.new("L", image.size, 128))
    soft = refine_alpha(image, _soft_disk(80, 20, blur_px=4).resize(image.size))

    assert np.all(np.asarray(flat) == 128)  # 0/0 would have made this 0 or garbage
    values = np.asarray(soft)
    assert 0 < values.max() <= 255 and values.min() >= 0


def test_values_stay_in_range_on_noise():
    rng = np.random.default_rng(3)
    image = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), "RGB")
    mask = Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8), "L")

    for guide in ("grey", "colour"):
        values = np.asarray(refine_alpha(image, mask, guide=guide), dtype=np.int64)
        # Clipped, not wrapped: a mean near 128 means no 255 + 1 -> 0.
        assert values.min() >= 0 and values.max() <= 255
        assert 96 < values.mean() < 160


def test_a_mask_that_does_not_fit_the_image_is_refused():
    image = Image.new("RGB", (10, 10))
    with pytest.raises(ValueError):
        refine_alpha(image, Image.new("L", (10, 11)))
    with pytest.raises(ValueError):
        refine_alpha(image, Image.new("RGB", (10, 10)))


def test_a_grey_photo_with_the_colour_guide_matches_the_grey_guide():
    # R = G = B makes the colour guide's 3x3 system nearly singular; it must still
    # solve (a rounding slip here once gave NaN, cast to 0: holes in the mask).
    # On such a photo the colour fit is the grey fit with epsilon / 3, exactly.
    image = _photo("camera.png", (256, 256))
    mask = _soft_disk(256, 80, blur_px=3)

    colour = np.asarray(refine_alpha(image, mask, guide="colour", epsilon=3e-5), dtype=int)
    grey = np.asarray(refine_alpha(image, mask, guide="grey", epsilon=1e-5), dtype=int)

    assert np.abs(colour - grey).max() <= 1
    assert colour[128, 128] == 255 and colour[5, 5] == 0
    assert not np.array_equal(colour, np.asarray(mask))
