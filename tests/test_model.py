"""The Segmenter and its model file: verified, kept open, and described right."""

import dataclasses
import hashlib
import json
import os

import numpy as np
import onnx
import pytest
from PIL import Image

from isnet_wsgi.config import DEFAULT_MODEL_PATH
from isnet_wsgi.model.segmenter import (
    ModelError,
    ModelFile,
    ModelInput,
    Segmenter,
    SessionOptions,
    arena_mb,
    mask_from_output,
    request_heap_mb,
)
from isnet_wsgi.model.session import session_options, shared_arena
from isnet_wsgi.runtime import memory
from models import quantize
from tests.helpers import make_settings, open_image, photo_bytes

MANIFEST_PATH = DEFAULT_MODEL_PATH.with_suffix(".json")


def test_the_manifest_quantises_the_input_as_the_model_expects():
    segmenter = Segmenter.load(DEFAULT_MODEL_PATH, MANIFEST_PATH, SessionOptions())
    model = onnx.load(str(DEFAULT_MODEL_PATH))
    assert segmenter.input.quantisation == quantize.input_quantisation(model)


def test_a_manifest_that_misdescribes_the_input_stops_the_worker(tmp_path):
    manifest = json.loads(MANIFEST_PATH.read_text())
    manifest["input"].pop("quantisation")
    manifest_path = tmp_path / "manifest.json"
    manifest_path.write_text(json.dumps(manifest))
    segmenter = Segmenter.load(DEFAULT_MODEL_PATH, manifest_path, SessionOptions())
    with pytest.raises(ModelError, match="takes tensor\\(uint8\\)"):
        segmenter.start()
    assert not segmenter.loaded and "manifest" in segmenter.error


def test_uint8_input_is_the_float_input_quantised(service):
    """What the model gets from the service is what its removed QuantizeLinear made."""
    segmenter = service.segmenter
    image = open_image(photo_bytes("coffee.png")).convert("RGB")
    floats = dataclasses.replace(segmenter.input, quantisation=None).tensor(image)
    quantised = segmenter.input.tensor(image)
    scale, zero_point = segmenter.input.quantisation
    expected = np.clip(np.rint(floats / np.float32(scale)) + zero_point, 0, 255)
    assert quantised.dtype == np.uint8 and quantised.shape == (1, 3, 1024, 1024)
    np.testing.assert_array_equal(quantised, expected.astype(np.uint8))


def test_the_verified_file_is_kept_open_not_in_memory(tmp_path):
    path = tmp_path / "weights.bin"
    data = os.urandom(32 * 1024 * 1024)
    path.write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    del data
    before_kb = memory.rss_mb() * 1024
    model_file = ModelFile.open_verified(path, digest)
    assert memory.rss_mb() * 1024 - before_kb < 8 * 1024  # hashed in fixed-size reads
    path.rename(tmp_path / "moved.bin")  # the open file is still the checked one
    assert hashlib.sha256(model_file.verified_bytes()).hexdigest() == digest
    model_file.close()
    with pytest.raises(ModelError, match="already loaded"):
        model_file.verified_bytes()


def test_a_file_changed_after_start_up_is_refused_by_the_worker(tmp_path):
    path = tmp_path / "weights.bin"
    path.write_bytes(b"a" * 4096)
    model_file = ModelFile.open_verified(path, hashlib.sha256(b"a" * 4096).hexdigest())
    with open(path, "r+b") as file:  # in place: the open descriptor sees it
        file.write(b"b")
    with pytest.raises(ModelError, match="does not match its manifest"):
        model_file.verified_bytes()


def test_an_empty_or_missing_file_is_refused_with_its_name(tmp_path):
    (tmp_path / "empty.onnx").write_bytes(b"")
    with pytest.raises(ModelError, match="empty.onnx is empty"):
        ModelFile.open_verified(tmp_path / "empty.onnx", "0" * 64)
    with pytest.raises(ModelError, match="absent.onnx is missing"):
        ModelFile.open_verified(tmp_path / "absent.onnx", "0" * 64)


def test_a_file_emptied_after_start_up_is_refused_by_the_worker(tmp_path):
    path = tmp_path / "weights.bin"
    path.write_bytes(b"a" * 4096)
    model_file = ModelFile.open_verified(path, hashlib.sha256(b"a" * 4096).hexdigest())
    path.write_bytes(b"")  # truncated in place
    with pytest.raises(ModelError, match="does not match its manifest"):
        model_file.verified_bytes()


def test_a_folder_is_refused_as_unreadable(tmp_path):
    with pytest.raises(ModelError, match="is unreadable"):
        ModelFile.open_verified(tmp_path, "0" * 64)


# --- The input and output contract, without the model ---------------------

def test_tensor_is_normalised_nchw():
    image = Image.new("RGB", (10, 10), (255, 0, 128))
    tensor = ModelInput(size_px=(32, 16)).tensor(image)
    assert tensor.shape == (1, 3, 16, 32) and tensor.dtype == np.float32
    assert np.allclose(tensor[0, :, 0, 0], [0.5, -0.5, 128 / 255 - 0.5], atol=1e-6)


def test_tensor_takes_a_mean_and_std_per_channel():
    image = Image.new("RGB", (4, 4), (255, 255, 255))
    tensor = ModelInput((4, 4), mean=(0.5, 0.25, 0.0), std=(1.0, 0.5, 2.0)).tensor(image)
    assert np.allclose(tensor[0, :, 0, 0], [0.5, 1.5, 0.5])


def test_tensor_divides_by_the_images_brightest_value_as_rembg():
    """A dark photo is stretched to the full range (rembg: x / max(x)); with
    divide_by "255" it is not."""
    image = Image.new("RGB", (4, 4), (0, 50, 100))
    stretched = ModelInput((4, 4)).tensor(image)
    assert np.allclose(stretched[0, :, 0, 0], [-0.5, 0.0, 0.5])
    plain = ModelInput((4, 4), divide_by="255").tensor(image)
    assert np.allclose(plain[0, :, 0, 0], [-0.5, 50 / 255 - 0.5, 100 / 255 - 0.5])
    black = ModelInput((4, 4)).tensor(Image.new("RGB", (4, 4)))
    assert np.isfinite(black).all() and np.allclose(black, -0.5)


def test_tensor_is_rembgs_input_exactly():
    """LANCZOS to the model's size, then float64 x/max - 0.5 rounded to float32."""
    pixels = (np.arange(60 * 40 * 3) * 7 % 200).astype(np.uint8).reshape(40, 60, 3)
    image = Image.fromarray(pixels, "RGB")
    resized = np.asarray(image.resize((32, 32), Image.Resampling.LANCZOS))
    expected = (resized / float(resized.max()) - 0.5).transpose(2, 0, 1)[np.newaxis].astype(np.float32)
    np.testing.assert_array_equal(ModelInput((32, 32)).tensor(image), expected)


def rembgs_input(image: Image.Image, size_px: tuple[int, int]) -> np.ndarray:
    """rembg's preprocessing, in one piece: LANCZOS, then float64 x/max - 0.5."""
    resized = np.asarray(image.convert("RGB").resize(size_px, Image.Resampling.LANCZOS))
    return (resized / float(resized.max()) - 0.5).transpose(2, 0, 1)[np.newaxis].astype(np.float32)


@pytest.mark.parametrize("size_px", [(1024, 1024), (512, 256), (320, 320), (96, 100)])
@pytest.mark.parametrize("photo, source_size", [
    ("coffee.png", None), ("astronaut.png", (1024, 683)), ("astronaut.png", (683, 1024)),
    ("camera.png", (1500, 1111)), ("camera.png", (512, 300)), ("camera.png", (300, 256)),
    ("grass.png", (333, 257)), ("brick.png", (1024, 1024))])
@pytest.mark.parametrize("threads", [2, 3])
def test_the_input_made_in_bands_is_the_whole_images(size_px, photo, source_size, threads):
    image = open_image(photo_bytes(photo)).convert("RGB")
    if source_size is not None:
        image = image.resize(source_size, Image.Resampling.BICUBIC)
    floats = ModelInput(size_px)
    np.testing.assert_array_equal(floats.tensor(image, threads=threads), rembgs_input(image, size_px))
    quantised = dataclasses.replace(floats, quantisation=(0.0079, 127))
    np.testing.assert_array_equal(quantised.tensor(image, threads=threads), quantised.tensor(image))


def test_manifest_names_the_resize_and_the_divisor():
    read = ModelInput.from_manifest({"input": {"resize": "BILINEAR", "normalisation": {"divide_by": "255"}}})
    assert read.resample == Image.Resampling.BILINEAR and read.divide_by == "255"
    assert ModelInput.from_manifest({}).resample == Image.Resampling.LANCZOS
    with pytest.raises(ModelError, match="unknown model input"):
        ModelInput.from_manifest({"input": {"resize": "NEAREST"}})


def test_mask_is_truncated_like_rembgs_and_resized_with_the_filter_given():
    scores = np.array([[[[0.0, 0.5], [1.0, 0.25]]]], dtype=np.float32)
    assert np.asarray(mask_from_output(scores, (2, 2))).tolist() == [[0, 127], [255, 63]]
    big = np.zeros((1, 1, 8, 8), np.float32)
    big[..., 4:] = 1.0
    full = Image.fromarray((big[0, 0] * 255).astype(np.uint8))
    for resample in (Image.Resampling.LANCZOS, Image.Resampling.BOX):
        expected = np.asarray(full.resize((3, 3), resample))
        np.testing.assert_array_equal(np.asarray(mask_from_output(big, (3, 3), resample)), expected)


def test_mask_is_min_max_scaled_and_a_flat_output_is_not_nan():
    scores = np.array([[[[0.2, 0.4], [0.6, 0.2]]]], dtype=np.float32)
    mask = np.asarray(mask_from_output(scores, (2, 2)))
    assert np.abs(mask.astype(int) - [[0, 128], [255, 0]]).max() <= 1
    flat = mask_from_output(np.full((1, 1, 4, 4), 0.7, np.float32), (8, 8))
    assert np.asarray(flat).max() == 0 and flat.size == (8, 8)


def test_quantised_tensor_applies_mean_std_and_quantisation_per_channel():
    image = Image.fromarray((np.arange(16 * 16 * 3) % 256).astype(np.uint8).reshape(16, 16, 3), "RGB")
    mean, std, quantisation = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), (0.02, 120)
    floats = ModelInput((16, 16), mean, std).tensor(image)
    quantised = ModelInput((16, 16), mean, std, quantisation).tensor(image)
    expected = np.clip(np.rint(floats / np.float32(0.02)) + 120, 0, 255).astype(np.uint8)
    assert quantised.dtype == np.uint8
    np.testing.assert_array_equal(quantised, expected)


def test_the_segmenter_answers_a_mask_of_the_image_size(service):
    image = open_image(photo_bytes("coffee.png")).convert("RGB")
    mask = service.segmenter.mask(image)
    assert mask.mode == "L" and mask.size == image.size
    assert service.segmenter.last_run_s > 0
    values = np.asarray(mask)
    assert values.min() == 0 and values.max() == 255  # min-max: a cup and a background


ARENA_MB = 192  # the size the README measures


@pytest.mark.parametrize(("container_limit_mb", "overrides", "expected_mb"), [
    (None, {}, ARENA_MB),          # the default, with no container limit
    (256.0, {}, 0),                # not in a small container
    (None, {"ort_arena_mb": 0}, 0),  # turned off
    (None, {"ort_arena_mb": ARENA_MB}, ARENA_MB),   # no limit
    (2048.0, {"ort_arena_mb": ARENA_MB}, ARENA_MB),
    (512.0, {"ort_arena_mb": ARENA_MB}, ARENA_MB),  # Railway's small plan
    (511.0, {"ort_arena_mb": ARENA_MB}, 0),         # below ARENA_MIN_MEMORY_MB
    (256.0, {"ort_arena_mb": ARENA_MB}, 0),
    (256.0, {"arena_min_memory_mb": 0, "ort_arena_mb": 160}, 160),
])
def test_the_arena_is_kept_only_where_the_container_has_room(container_limit_mb, overrides,
                                                               expected_mb):
    settings = make_settings(**overrides)
    assert arena_mb(settings, container_limit_mb) == expected_mb


@pytest.mark.parametrize(("arena", "overrides", "expected_mb"), [
    (ARENA_MB, {}, 16),                       # the default, beside the arena
    (0, {}, 0),                               # no arena: nothing kept between requests
    (ARENA_MB, {"request_heap_mb": 0}, 0),    # turned off
    (ARENA_MB, {"request_heap_mb": 32}, 32),
])
def test_a_heap_is_kept_for_requests_only_beside_the_arena(arena, overrides, expected_mb):
    assert request_heap_mb(make_settings(**overrides), arena) == expected_mb


def test_the_service_asks_for_the_heap_with_its_arena_and_not_without(service):
    assert service.segmenter.options.request_heap_mb == 16
    assert Segmenter.from_settings(make_settings(ort_arena_mb=0)).options.request_heap_mb == 0


def test_a_second_arena_size_in_one_process_is_refused():
    """Sessions would silently share the first."""
    shared_arena(ARENA_MB)
    shared_arena(ARENA_MB)  # the same size again is no change
    with pytest.raises(ValueError, match=f"already {ARENA_MB} MiB"):
        shared_arena(ARENA_MB + 1)


def test_the_arena_changes_memory_not_masks(service):
    """The same output from the service's session (the default arena, no
    container limit here) and one without an arena.

    With the arena the planner's buffer reuse is off too (isnet_wsgi/model/session.py).
    """
    assert service.segmenter.options.arena_mb == ARENA_MB
    lean = Segmenter.load(DEFAULT_MODEL_PATH, MANIFEST_PATH,
                          dataclasses.replace(service.segmenter.options, arena_mb=0))
    lean.start()
    assert session_options(service.segmenter.options).enable_mem_reuse is False
    assert session_options(lean.options).enable_mem_reuse is True
    tensor = service.segmenter.input.tensor(open_image(photo_bytes("coffee.png")).convert("RGB"))
    expected = lean.run(tensor)
    np.testing.assert_array_equal(service.segmenter.run(tensor), expected)
    np.testing.assert_array_equal(service.segmenter.run(tensor), expected)  # and from reused memory
