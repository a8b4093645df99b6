"""Full-resolution answers (MAX_DIMENSION above the model's 1024 px).

The banded steps give the pixels of the whole-image ones, the answers come
at the photo's size, an answer an encoder cannot make within budget is a
413 before any work, and the alpha is rembg's at full size.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import webtest
from PIL import Image

from bench.full_resolution import synthetic_photo
from isnet_wsgi.image import compose, fullsize, png
from isnet_wsgi.image.errors import DecodeBudgetExceeded, OutputTooLarge
from isnet_wsgi.options import ColorOptions, RemoveOptions
from isnet_wsgi.pipeline import Pipeline
from isnet_wsgi.runtime.cache import ResultCache
from isnet_wsgi.service import Service
from models import fidelity, reference
from models.manifest import HELD_OUT_DIR
from tests.helpers import make_settings, open_image, photo_bytes
from tests.test_api import remove
from tests.test_fidelity import IOU_MARGIN, MAE_MARGIN

SIZE = (1800, 1200)  # 2.2 MP: above the model's 1 MP, small enough to be quick


@pytest.fixture(scope="module")
def full_pipeline(service) -> Pipeline:
    settings = make_settings(max_dimension_px=8192, max_upload_mb=25)
    return Pipeline(settings, service.segmenter)


@pytest.fixture(scope="module")
def photo_jpeg() -> bytes:
    return synthetic_photo(SIZE)


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, np.int16)


def _photo(mode: str) -> Image.Image:
    image = open_image(photo_bytes("coffee.png")).convert(mode).resize(
        (1500, 1100), Image.Resampling.BICUBIC)
    if mode == "RGBA":
        image.putalpha(image.getchannel("R"))  # an alpha of its own, not flat
    return image


def _mask(size: tuple[int, int]) -> Image.Image:
    small = open_image(photo_bytes("camera.png")).convert("L").resize((1024, 1024))
    return small.resize(size, Image.Resampling.LANCZOS)


def test_the_mask_brought_up_in_bands_is_pillows_whole_resize():
    small = open_image(photo_bytes("camera.png")).convert("L").resize((1024, 1024))
    for size in ((3000, 2000), (1100, 2900), (2000, 800)):
        whole = small.resize(size, Image.Resampling.LANCZOS)
        assert fullsize.upscaled_mask(small, size, threads=2).tobytes() == whole.tobytes()


def test_the_subject_box_read_in_bands_is_the_whole_masks():
    mask = Image.new("L", (1500, 1100))
    assert fullsize.subject_box(mask) is None
    mask.paste(200, (300, 420, 1100, 950))
    mask.paste(17, (1200, 90, 1201, 91))  # just above the threshold, far from the rest
    for margin_px in (0, 40, 5000):
        assert fullsize.subject_box(mask, margin_px) == compose.subject_box(mask, margin_px)


@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
def test_composites_in_place_are_the_whole_image_ones(mode):
    image, mask = _photo(mode), _mask((1500, 1100))
    assert (fullsize.cutout_in_place(image.copy(), mask).tobytes()
            == compose.cutout(image, mask).tobytes())
    made = fullsize.on_color_in_place(image.copy(), mask, (20, 200, 90)).convert("RGB")
    assert made.tobytes() == compose.on_color(image, mask, (20, 200, 90)).tobytes()
    for radius_px in (3.0, fullsize.EXACT_BLUR_MAX_RADIUS_PX):
        made = fullsize.on_blur_in_place(image.copy(), mask, radius_px).convert("RGB")
        wanted = compose.on_background(image, mask, compose.blurred(image, radius_px))
        assert made.tobytes() == wanted.tobytes(), radius_px


def test_a_wide_blur_made_at_a_reduced_size_is_the_whole_blur_within_a_few_levels():
    image, mask = _photo("RGB"), _mask((1500, 1100))
    radius_px = 100.0  # options.MAX_BLUR_RADIUS_PX (and 16.5-60: within 0.5 on average)
    made = fullsize.on_blur_in_place(image.copy(), mask, radius_px)
    wanted = compose.on_background(image, mask, compose.blurred(image, radius_px))
    difference = np.abs(_pixels(made) - _pixels(wanted))
    assert difference.mean() < 1.0 and np.percentile(difference, 99.9) <= 6, (
        difference.mean(), difference.max())


@pytest.mark.parametrize("background_size", [(600, 400), (500, 1400)])
def test_a_background_scaled_in_bands_is_the_whole_cover_within_a_level(background_size):
    image, mask = _photo("RGB"), _mask((1500, 1100))
    background = open_image(photo_bytes("astronaut.png")).resize(background_size)
    made = fullsize.on_cover_in_place(image.copy(), mask, background)
    wanted = compose.on_background(image, mask, compose.cover(background, image.size))
    # NOTE: each band's box starts at a float offset, not at the whole's 0:
    # LANCZOS weights differ in the last bit; measured 0.08 level on average,
    # 1 at the 99.9th percentile, 6 at most.
    difference = np.abs(_pixels(made) - _pixels(wanted))
    assert difference.mean() < 0.25 and np.percentile(difference, 99.9) <= 2
    assert difference.max() <= 8


@pytest.mark.parametrize("box", [None, (100, 37, 1400, 1001)])
@pytest.mark.parametrize("mode, source_mode", [("RGBA", "RGBA"), ("RGB", "RGB"), ("L", "L"),
                                               ("RGB", "RGBA")])
def test_png_written_in_bands_decodes_to_the_pixels(box, mode, source_mode):
    image = _photo("RGBA").convert(source_mode)
    data = b"".join(png.encode_in_bands(image, mode=mode, box=box, threads=2,
                                        band_bytes=256 * 1024))
    decoded = open_image(data)
    wanted = image.convert(mode)
    assert decoded.mode == mode
    assert decoded.tobytes() == (wanted if box is None else wanted.crop(box)).tobytes()


def test_a_full_resolution_cutout_is_the_photo_with_the_masks_alpha(full_pipeline, photo_jpeg):
    cutout = open_image(full_pipeline.remove(photo_jpeg, RemoveOptions()).body)
    mask = open_image(full_pipeline.remove(photo_jpeg, RemoveOptions(mask=True)).body)
    assert cutout.size == mask.size == SIZE and cutout.mode == "RGBA" and mask.mode == "L"
    assert cutout.getchannel("A").tobytes() == mask.tobytes()
    photo = _pixels(open_image(photo_jpeg).convert("RGB"))
    visible = _pixels(mask) > 0
    assert np.array_equal(_pixels(cutout)[..., :3][visible], photo[visible])
    assert not _pixels(cutout)[~visible].any()  # (0, 0, 0, 0) where fully transparent


def test_a_streamed_answer_is_the_same_png(service, full_pipeline, photo_jpeg):
    streaming = Pipeline(full_pipeline.settings, service.segmenter, stream=True)
    output = streaming.remove(photo_jpeg, RemoveOptions(crop=True, margin_px=10))
    assert output.body == b""
    parts = list(output.stream)
    assert len(parts) > 3  # header, IDAT bands, end: sent as they are made
    joined = full_pipeline.remove(photo_jpeg, RemoveOptions(crop=True, margin_px=10))
    assert b"".join(parts) == joined.body
    assert open_image(joined.body).size == joined.size != SIZE  # cropped to the subject


@pytest.mark.parametrize("options, background", [
    (ColorOptions(rgb=(0, 90, 255)), None),
    (ColorOptions(blur_radius_px=15.0, image_format="PNG"), None),
    (ColorOptions(), "astronaut.png"),
])
def test_change_color_answers_at_the_photos_size(full_pipeline, photo_jpeg, options, background):
    output = full_pipeline.change_color(
        photo_jpeg, options, background_data=photo_bytes(background) if background else None)
    answer = open_image(output.body)
    assert answer.size == SIZE and answer.mode == "RGB"
    assert answer.format == options.image_format


def test_a_webp_too_large_for_its_encoder_is_refused_before_inference(service):
    runs = []
    pipeline = Pipeline(make_settings(max_dimension_px=8192, max_upload_mb=25),
                        service.segmenter, observe_inference_s=runs.append)
    with pytest.raises(OutputTooLarge, match="format=png, or max_dimension=2449 or less"):
        pipeline.remove(synthetic_photo((3000, 2000)), RemoveOptions(image_format="WEBP"))
    assert runs == []
    small = pipeline.remove(synthetic_photo((1500, 1000)), RemoveOptions(image_format="WEBP"))
    assert open_image(small.body).size == (1500, 1000)


def test_the_default_ceiling_answers_1024_px(service, photo_jpeg):
    output = Pipeline(make_settings(), service.segmenter).remove(photo_jpeg, RemoveOptions())
    assert open_image(output.body).size == (1024, 683)


@pytest.fixture(scope="module")
def fp32_session():
    return reference.fp32_session()


@pytest.mark.parametrize("name", ["fur-dog.jpg", "product-books.jpg"])
def test_full_resolution_alpha_is_rembgs_at_full_size(service, full_pipeline, fp32_session,
                                                      name):
    """The photo at 3x through the full-resolution path, against
    models/reference.py on it (rembg's LANCZOS upscale of the fp32 mask), is
    as close as the service's 1024-px answer for it is to rembg's at 1024 px
    (the model's own figure on this photo), within test_fidelity's margins."""
    small = fidelity.load_photo(HELD_OUT_DIR / name)
    photo = small.resize((small.width * 3, small.height * 3), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    photo.save(buffer, "PNG", compress_level=1)
    full = open_image(full_pipeline.remove(buffer.getvalue(), RemoveOptions(mask=True)).body)
    at_full = fidelity.score(full, reference.reference_mask(fp32_session, photo))
    at_1024 = Pipeline(make_settings(), service.segmenter).remove(
        buffer.getvalue(), RemoveOptions(mask=True))
    mask_1024 = open_image(at_1024.body)
    photo_1024 = photo.resize(mask_1024.size, Image.Resampling.LANCZOS)
    at_1024 = fidelity.score(mask_1024, reference.reference_mask(fp32_session, photo_1024))
    assert full.size == photo.size
    assert at_full["iou"] >= at_1024["iou"] - IOU_MARGIN, (at_full, at_1024)
    assert at_full["mae"] <= at_1024["mae"] + MAE_MARGIN, (at_full, at_1024)


def test_the_api_streams_a_full_resolution_png_and_does_not_cache_it(service, photo_jpeg):
    settings = make_settings(max_dimension_px=8192, max_upload_mb=25, cache_mb=64)
    client = webtest.TestApp(Service(settings, service.segmenter))
    for _ in range(2):
        answer = remove(client, photo_jpeg, "photo.jpg")
        assert answer.status_int == 200 and answer.content_type == "image/png"
        # NOTE: webtest adds a Content-Length once it has the body; that the
        # server sends it chunked is tests/system/test_full_resolution.py's.
        assert answer.headers["X-Cache"] == "miss"  # never all in memory to keep
        assert open_image(answer.body).size == SIZE
        assert (answer.headers["X-Width"], answer.headers["X-Height"]) == ("1800", "1200")
    webp = remove(client, synthetic_photo((3000, 2000)), "photo.jpg",
                  params={"format": "webp"}, status=413)
    assert webp.json["error"] == "output_too_large" and "format=png" in webp.json["message"]


def test_a_result_above_the_caches_share_is_not_kept():
    cache = ResultCache(10)
    cache.put("over half", b"123456")
    cache.put("half", b"12345")
    assert cache.get("over half") is None and cache.get("half") == b"12345"


def test_a_turned_phone_photo_is_answered_upright_at_full_size(full_pipeline, photo_jpeg):
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: turn 90 degrees clockwise to view
    turned = io.BytesIO()
    open_image(photo_jpeg).save(turned, "JPEG", quality=90, exif=exif.tobytes())
    cutout = open_image(full_pipeline.remove(turned.getvalue(), RemoveOptions()).body)
    mask = open_image(full_pipeline.remove(turned.getvalue(), RemoveOptions(mask=True)).body)
    assert cutout.size == mask.size == SIZE[::-1]
    assert cutout.getchannel("A").tobytes() == mask.tobytes()


def test_the_full_decodes_budget_is_checked_before_the_model_runs(service):
    """A 25 MP progressive JPEG keeps every coefficient (75 MB) beside its
    pixels: over the 160 MB budget for the full decode, though its drafted
    view for the model would fit; refused before that view is decoded."""
    runs = []
    pipeline = Pipeline(make_settings(max_dimension_px=8192, max_upload_mb=25),
                        service.segmenter, observe_inference_s=runs.append)
    buffer = io.BytesIO()
    Image.new("RGB", (6120, 4080), (200, 120, 40)).save(buffer, "JPEG", progressive=True)
    with pytest.raises(DecodeBudgetExceeded, match="the decode budget is 160 MB"):
        pipeline.remove(buffer.getvalue(), RemoveOptions())
    assert runs == []
