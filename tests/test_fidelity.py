"""The built model's masks against rembg's, on the held-out hard photos.

Each photo in models/hardset/held-out/ goes through the service's own mask
path (Pipeline.mask) and is compared with its committed reference mask,
made by models/reference.py: the fp32 model with rembg's pre- and
post-processing, i.e. what rembg's `isnet-general-use` returns.

NOTE: the issue's targets (every photo IoU >= 0.99 at 0.5, MAE <= 0.004)
are NOT met yet; see models/README.md. Until they are, a photo's bar is the
lower of the target and what the shipped model measured (MEASURED, by
`python -m models.fidelity`) less a margin: a regression fails, an
improvement passes, and a photo that reaches the target is held to it.
A new default model needs MEASURED re-measured with it (and the figures in
models/README.md).

Needs models/isnet-general-tiny.onnx and the build's fp32 cache (`make test`
runs `make model` first).
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from models import fidelity, reference
from models.manifest import (
    HARDSET_CALIBRATION_DIR,
    HELD_OUT_DIR,
    MODEL_PATH,
    photos,
    variant_manifest,
)

TARGET_IOU, TARGET_MAE = fidelity.TARGET_IOU, fidelity.TARGET_MAE
# Room for onnxruntime's float kernels differing between CPUs. The integer
# ones agree since the weights are 7-bit (models/quantize.py, reduce_range):
# with 8-bit weights an AVX2-only CPU scored up to 0.29 IoU lower than a Xeon.
IOU_MARGIN = 0.01
MAE_MARGIN = 0.002
# (IoU, MAE) of the shipped model (sha256 in models/isnet-general-tiny.json)
# per held-out photo, measured by `python -m models.fidelity` against the
# committed reference masks (issue 28's model: p90 ranges over 20 calibration photos).
MEASURED = {
    "edge-apple.jpg": (0.9968, 0.00374),
    "edge-fruits.jpg": (0.9713, 0.00835),
    "edge-sweets.jpg": (0.9928, 0.00129),
    "foliage-aloe.jpg": (0.9411, 0.01468),
    "foliage-butterfly-leaf.jpg": (0.9909, 0.00416),
    "foliage-one-flower.jpg": (1.0, 1e-05),
    "fur-dog.jpg": (0.9869, 0.01219),
    "fur-squirrel.jpg": (0.9935, 0.0024),
    "glass-cups.jpg": (0.9903, 0.0058),
    "illustration-anime.jpg": (0.9889, 0.00516),
    "illustration-dragon.jpg": (0.9879, 0.007),
    "illustration-robot.jpg": (0.9989, 0.00291),
    "lowcontrast-blocks.jpg": (0.9713, 0.00534),
    "lowcontrast-dark-notebook.jpg": (0.8586, 0.0032),
    "lowcontrast-pier-fog.jpg": (0.9839, 0.01854),
    "people-two-players.jpg": (0.9969, 0.00147),
    "product-books.jpg": (0.9917, 0.00262),
    "product-box-in-scene.jpg": (0.9971, 0.00535),
    "thin-barrier-fence.jpg": (0.9899, 0.00162),
    "thin-pagoda-trees.jpg": (0.9926, 0.00149),
    "thin-tower-birds.jpg": (0.9594, 0.00039),
    "unsure-cookie-box.jpg": (0.9297, 0.02955),
    "unsure-pedestrians.jpg": (0.8771, 0.00162),
    "unsure-sign-tree.jpg": (0.9518, 0.01815),
    "vehicle-boats.jpg": (0.9829, 0.00282),
    "vehicle-car-rear.jpg": (0.8708, 0.02039),
}
# Regenerated from the fp32 model in the test: the worst photo, fur, an illustration.
REGENERATED = ("lowcontrast-dark-notebook.jpg", "fur-dog.jpg", "illustration-anime.jpg")
HELD_OUT = photos(HELD_OUT_DIR)


@pytest.fixture(scope="module")
def pipeline():
    assert MODEL_PATH.is_file(), "models/isnet-general-tiny.onnx is missing: run `make model`"
    return fidelity.service_pipeline(MODEL_PATH)


def test_every_held_out_photo_has_a_reference_and_a_measurement():
    assert len(HELD_OUT) >= 16
    assert set(MEASURED) == {photo.name for photo in HELD_OUT}
    for photo in HELD_OUT:
        assert fidelity.reference_path(photo).is_file(), photo.name


@pytest.mark.parametrize("photo", HELD_OUT, ids=lambda photo: photo.stem)
def test_mask_is_as_close_to_rembg_as_measured(pipeline, photo):
    measured_iou, measured_mae = MEASURED[photo.name]
    got = fidelity.score(pipeline.mask(fidelity.load_photo(photo)), fidelity.load_reference(photo))
    assert got["iou"] >= min(TARGET_IOU, measured_iou - IOU_MARGIN), got
    assert got["mae"] <= max(TARGET_MAE, measured_mae + MAE_MARGIN), got


def test_committed_reference_masks_are_what_the_fp32_model_makes():
    """The reference function, run again, reproduces the committed masks.

    NOTE: up to one level of 255 on a few pixels: the fp32 convolutions'
    last bits differ between CPU kernels, and truncation to uint8 can then
    land one step lower.
    """
    session = reference.fp32_session()
    for name in REGENERATED:
        photo = HELD_OUT_DIR / name
        made = np.asarray(reference.reference_mask(session, fidelity.load_photo(photo)), np.int16)
        committed = np.asarray(fidelity.load_reference(photo), np.int16)
        assert made.shape == committed.shape, name
        difference = np.abs(made - committed)
        assert difference.max() <= 1 and (difference > 0).mean() < 0.001, name


def test_the_services_mask_path_on_the_fp32_model_is_rembgs():
    """The service's own preprocessing and post-processing (ModelInput,
    mask_from_output) around the fp32 model reproduce the reference masks:
    what is left between our masks and rembg's is the quantisation alone."""
    fp32 = reference.fp32_model_path()
    pipeline = fidelity.service_pipeline(fp32, variant_manifest(fp32, None))
    for name in REGENERATED:
        photo = HELD_OUT_DIR / name
        made = np.asarray(pipeline.mask(fidelity.load_photo(photo)), np.int16)
        difference = np.abs(made - np.asarray(fidelity.load_reference(photo), np.int16))
        assert difference.max() <= 1 and (difference > 0).mean() < 0.001, name


def _thumbnail(path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("L").resize((16, 16), Image.Resampling.BOX), np.float32)


def test_held_out_and_calibration_photos_share_no_photo():
    calibration = photos(HARDSET_CALIBRATION_DIR)
    assert {p.name for p in calibration}.isdisjoint(p.name for p in HELD_OUT)
    for held_out in HELD_OUT:
        thumbnail = _thumbnail(held_out)
        for other in calibration:
            theirs = _thumbnail(other)
            for variant in (theirs, theirs[:, ::-1], theirs[::-1, :]):
                assert np.abs(thumbnail - variant).mean() > 8, (held_out.name, other.name)


def test_the_unsure_category_is_on_both_sides():
    """Scenes where the fp32 mask itself is grey over large areas (issue 28):
    held out and calibrated on, never the same photo (checked above)."""
    held_out = [p for p in HELD_OUT if fidelity.category(p) == "unsure"]
    calibration = [p for p in photos(HARDSET_CALIBRATION_DIR) if fidelity.category(p) == "unsure"]
    assert len(held_out) >= 2 and len(calibration) >= 1 and len(held_out) + len(calibration) >= 3


def test_reference_is_rembgs_arithmetic():
    """Each step as rembg does it: divide by the image's max, minus 0.5; then
    min-max without a bias, times 255 truncated (0.5 is 127, the top is 255)."""
    image = Image.new("RGB", (1024, 1024), (0, 100, 200))
    batch = reference.reference_input(image)
    assert batch.shape == (1, 3, 1024, 1024) and batch.dtype == np.float32
    assert np.allclose(batch[0, :, 0, 0], [0 / 200 - 0.5, 100 / 200 - 0.5, 200 / 200 - 0.5])

    class Steps:
        def run(self, batch):
            output = np.zeros((1, 1, 1024, 1024), np.float32)
            output[0, 0, :, 512:] = 0.5
            output[0, 0, :, 768:] = 1.0
            return output

    mask = np.asarray(reference.reference_mask(Steps(), image))
    assert (mask[:, 0] == 0).all() and (mask[:, 600] == 127).all() and (mask[:, 1000] == 255).all()
