"""The Segmenter: its manifest and its model must describe the same input."""

import json

import numpy as np
import onnx
import pytest

from isnet_wsgi import imaging
from isnet_wsgi.config import DEFAULT_MODEL_PATH
from isnet_wsgi.model import ModelError, Segmenter, SessionOptions
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
