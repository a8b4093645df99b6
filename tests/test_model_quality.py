"""The built model on real photos: sensible masks, and faithful to the fp32 model.

Needs models/isnet-general-tiny.onnx: `make test` builds it first (`make model`).
The fp32 reference comes from the build's cache (the build made it).
"""

from __future__ import annotations

import numpy as np
import pytest

from models import manifest as model_manifest
from models import measure, report, source
from models.fp32 import fp32_reference
from models.reference import reference_input

MIN_IOU_VS_FP32 = 0.97  # the bar for every held-out photo and composite
MIN_IOU_VS_KNOWN_ALPHA = 0.95
# Boxes (x0, y0, x1, y1, in 1024 px input coordinates) that are certainly subject,
# and corners that are certainly background, in each held-out photo.
SUBJECT_BOXES = {"astronaut.png": (360, 80, 540, 240), "coffee.png": (300, 350, 700, 700)}
BACKGROUND_CORNERS = {"astronaut.png": ("top-left", "top-right"),
                      "coffee.png": ("top-left", "top-right", "bottom-left", "bottom-right")}
CORNER_PX = 64


@pytest.fixture(scope="module")
def manifest() -> dict:
    manifest = model_manifest.read_manifest()
    assert manifest, f"{model_manifest.MANIFEST_PATH} is missing or unreadable"
    assert model_manifest.MODEL_PATH.is_file(), "models/isnet-general-tiny.onnx is missing: run `make model`"
    return manifest


@pytest.fixture(scope="module")
def session(manifest):
    return measure.open_session(model_manifest.MODEL_PATH)


@pytest.fixture(scope="module")
def reference(manifest):
    cache = source.cache_dir()
    if manifest["source"]["kind"] == "npm":
        src = source.npm_model(cache)  # cached by the build: no download here
    else:
        pytest.fail("the model was built --from a file; rebuild from npm to run these tests")
    return measure.open_session(fp32_reference(src, cache))


@pytest.fixture(scope="module")
def evaluation(reference):
    return list(report.evaluation_images(reference))


def test_model_file_matches_its_manifest(manifest, session):
    assert source.sha256_file(model_manifest.MODEL_PATH) == manifest["sha256"]
    assert model_manifest.MODEL_PATH.stat().st_size == manifest["size_bytes"]
    model_input, model_output = session.get_inputs()[0], session.get_outputs()[0]
    assert model_input.name == manifest["input"]["name"] and model_input.shape == manifest["input"]["shape"]
    assert model_output.name == manifest["output"]["name"] and model_output.shape == manifest["output"]["shape"]


def _corner(mask: np.ndarray, which: str) -> np.ndarray:
    rows = slice(0, CORNER_PX) if which.startswith("top") else slice(-CORNER_PX, None)
    cols = slice(0, CORNER_PX) if which.endswith("left") else slice(-CORNER_PX, None)
    return mask[rows, cols]


@pytest.mark.parametrize("photo", sorted(SUBJECT_BOXES))
def test_mask_is_opaque_on_the_subject_and_clear_in_the_corners(session, photo):
    mask = measure.predict_mask(session, reference_input(report.load_rgb(report.PHOTOS_DIR / photo)))
    x0, y0, x1, y1 = SUBJECT_BOXES[photo]
    assert (mask[y0:y1, x0:x1] >= 0.5).mean() > 0.95
    for corner in BACKGROUND_CORNERS[photo]:
        assert _corner(mask, corner).mean() < 0.05, corner


def test_matches_the_fp32_model_on_held_out_photos_and_composites(session, reference, evaluation):
    labels = [label for label, _, _ in evaluation]
    assert {"astronaut.png", "coffee.png"} <= set(labels) and len(labels) >= 5
    for label, image, alpha in evaluation:
        batch = reference_input(image)
        mask = measure.predict_mask(session, batch)
        iou = measure.mask_iou(mask, measure.predict_mask(reference, batch))
        assert iou >= MIN_IOU_VS_FP32, f"{label}: IoU {iou:.4f} against fp32"
        if alpha is not None:
            truth = np.asarray(alpha.resize(mask.shape[::-1]), dtype=np.float32) / 255
            iou = measure.mask_iou(mask, truth)
            assert iou >= MIN_IOU_VS_KNOWN_ALPHA, f"{label}: IoU {iou:.4f} against the known alpha"


def test_held_out_photos_are_not_calibration_photos():
    calibration = {p.name for p in model_manifest.calibration_photos()}
    composites = {p.name for p in model_manifest.COMPOSITES_DIR.iterdir()}
    assert len(calibration) >= 18 and not (calibration | composites) & set(report.HELD_OUT)
