"""bench.stages feeds each variant the tensors the service would make for it."""

from __future__ import annotations

import numpy as np

from bench import modelfile, photos, stages
from models import build


def test_stage_tensors_are_the_services_input_for_the_model(tmp_path):
    assert build.MODEL_PATH.is_file(), "models/isnet-general-tiny.onnx is missing: run `make model`"
    paths = stages._tensors(build.MODEL_PATH, tmp_path)
    assert [p.stem for p in paths] == [name.rsplit(".", 1)[0] for name in photos.PHOTO_NAMES]
    wanted = modelfile.model_input(build.MODEL_PATH).tensor(photos.load(photos.PHOTO_NAMES[0]))
    first = np.load(paths[0])
    assert first.dtype == np.uint8 and first.shape == (1, 3, 1024, 1024)
    np.testing.assert_array_equal(first, wanted)
