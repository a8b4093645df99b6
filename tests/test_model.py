"""The Segmenter and its model file: verified, kept open, and described right."""

import hashlib
import json
import os

import numpy as np
import onnx
import pytest

from isnet_wsgi import imaging, memory
from isnet_wsgi.config import DEFAULT_MODEL_PATH
from isnet_wsgi.model import ModelError, ModelFile, Segmenter, SessionOptions
from models import quantize
from tests.helpers import open_image, photo_bytes

MANIFEST_PATH = DEFAULT_MODEL_PATH.with_suffix(".json")


def test_the_manifest_quantises_the_input_as_the_model_expects():
    segmenter = Segmenter.load(DEFAULT_MODEL_PATH, MANIFEST_PATH, SessionOptions())
    model = onnx.load(str(DEFAULT_MODEL_PATH))
    assert segmenter.input_quantisation == quantize.input_quantisation(model)


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
    mean, std = segmenter.normalisation
    image = open_image(photo_bytes("coffee.png")).convert("RGB")
    floats = imaging.to_tensor(image, (1024, 1024), mean=mean, std=std)
    quantised = imaging.to_tensor(image, (1024, 1024), mean=mean, std=std,
                                  quantisation=segmenter.input_quantisation)
    scale, zero_point = segmenter.input_quantisation
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
    assert memory.rss_mb() * 1024 - before_kb < 8 * 1024  # hashed in 1 MiB reads
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
