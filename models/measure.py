"""A model's session as the build's tools open it, and how two masks are compared.

Sessions take the service's session options (isnet_wsgi/model/session.py:
2 threads, no CPU arena, no memory pattern) but onnxruntime's own graph
optimisers; masks are compared by IoU at 0.5 and by mean absolute alpha
error. Peak RSS and latency, which need a fresh process, are footprint.py's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from isnet_wsgi.model.segmenter import normalised_output
from models.quantize import input_quantisation

THREADS = 2
MASK_THRESHOLD = 0.5


def session_options(threads: int = THREADS):
    """The service's session options (isnet_wsgi/model/session.py) with `threads`.

    NOTE: the graph optimisers are onnxruntime's own here; the service also
    turns off the NCHWc layout (DISABLED_OPTIMIZERS), which moves the fp32
    reference's outputs by ~2e-7, so the reference masks keep being made
    without that switch.
    """
    from isnet_wsgi.model.session import SessionOptions
    from isnet_wsgi.model.session import session_options as service_session_options

    return service_session_options(SessionOptions(intra_op_threads=threads))


class ModelSession:
    """An onnxruntime session fed float32 input (reference.reference_input).

    A built model takes its input already quantised to uint8 (see
    quantize.fold_input_quantisation); ``prepare`` makes that input from the
    float batch with the arithmetic of the QuantizeLinear it replaced.
    """

    def __init__(self, session, quantisation: tuple[float, int] | None):
        self.session = session
        self.quantisation = quantisation
        self.input_name = session.get_inputs()[0].name

    def get_inputs(self):
        return self.session.get_inputs()

    def get_outputs(self):
        return self.session.get_outputs()

    def prepare(self, batch: np.ndarray) -> np.ndarray:
        if self.quantisation is None or batch.dtype == np.uint8:
            return batch
        scale, zero_point = self.quantisation
        quantised = np.rint(batch / np.float32(scale)) + zero_point
        return np.clip(quantised, 0, 255).astype(np.uint8)

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: self.prepare(batch)})[0]


def open_session(model_path: Path, threads: int = THREADS) -> ModelSession:
    import onnxruntime as ort

    session = ort.InferenceSession(
        str(model_path), session_options(threads), providers=["CPUExecutionProvider"]
    )
    import onnx

    return ModelSession(session, input_quantisation(onnx.load(str(model_path))))


def predict_mask(session: ModelSession, batch: np.ndarray) -> np.ndarray:
    """The model's output min-max normalised to [0, 1], as the service does it."""
    return normalised_output(session.run(batch))


def unit_mask(mask) -> np.ndarray:
    """A mask as float32 in [0, 1]: 8-bit masks (arrays or 'L' images) are divided by 255."""
    array = np.asarray(mask)
    return array.astype(np.float32) / 255 if array.dtype == np.uint8 else array.astype(np.float32)


def mask_iou(a, b, threshold: float = MASK_THRESHOLD) -> float:
    """Intersection over union of two masks binarised at `threshold` (1.0 when both empty).

    Float masks in [0, 1] or 8-bit ones; 0.5 is 128 of 255 for the latter.
    """
    a, b = unit_mask(a), unit_mask(b)
    if a.shape != b.shape:
        raise ValueError(f"masks differ in size: {a.shape} vs {b.shape}")
    a_on, b_on = a >= threshold, b >= threshold
    union = np.logical_or(a_on, b_on).sum()
    return 1.0 if union == 0 else float(np.logical_and(a_on, b_on).sum() / union)


def mean_abs_error(a, b) -> float:
    """Mean absolute difference of two masks' alpha, in [0, 1]."""
    a, b = unit_mask(a), unit_mask(b)
    if a.shape != b.shape:
        raise ValueError(f"masks differ in size: {a.shape} vs {b.shape}")
    return float(np.abs(a - b).mean())
