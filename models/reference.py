"""The fidelity reference: what rembg's `isnet-general-use` session returns.

The fp32 widening of the npm fp16 weights (fp32.py) run with rembg's own
pre- and post-processing. The issue that asked for this measured that this
pipeline reproduces rembg 2.0.86's stored `isnet-general-use` results
exactly, so a mask's distance from `reference_mask` is its distance from
rembg. Every recipe is scored against this one function, and the build
calibrates on `reference_input`, the input the service makes too
(isnet_wsgi/model/segmenter.py ModelInput, from the manifest).

rembg's steps, in its order (rembg/sessions/base.py `normalize`, then the
ISNet session's `predict`):
1. RGB, LANCZOS resize to 1024x1024;
2. divide by the resized image's own maximum (not by 255: the two differ
   only for an image with no pure-white channel value, such as a dark or
   foggy photo), subtract 0.5 (std 1);
3. run; min-max normalise the output in float32 (the service's own
   segmenter.normalised_output: the range is floored at an epsilon so a
   flat output stays finite, where rembg divides by zero);
4. times 255, truncated to uint8 (numpy's astype, as rembg);
5. LANCZOS resize back to the image's size.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from isnet_wsgi.model.segmenter import INPUT_SIZE_PX, mask_from_output
from models import measure
from models.fp32 import fp32_model_path

MEAN = 0.5
MAX_PIXEL_FLOOR = 1e-6  # rembg's guard against an all-black image


def reference_input(image: Image.Image) -> np.ndarray:
    """rembg's model input for `image`: 1x3x1024x1024 float32."""
    resized = np.asarray(image.convert("RGB").resize((INPUT_SIZE_PX, INPUT_SIZE_PX), Image.Resampling.LANCZOS))
    scaled = resized / max(float(resized.max()), MAX_PIXEL_FLOOR) - MEAN
    return np.ascontiguousarray(scaled.transpose(2, 0, 1)[None], dtype=np.float32)


def reference_mask(session: measure.ModelSession, image: Image.Image) -> Image.Image:
    """The 'L' mask rembg would return for `image`, at the image's size.

    `session` is the fp32 model (fp32_session), fed float32 as rembg does.
    """
    return mask_from_output(session.run(reference_input(image)), image.size, Image.Resampling.LANCZOS)


def fp32_session(threads: int = measure.THREADS) -> measure.ModelSession:
    return measure.open_session(fp32_model_path(), threads)
