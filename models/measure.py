"""Measure a built model the way the service runs it: peak RSS, latency, fidelity.

Peak RSS must be measured in a fresh process (VmHWM never goes down), so
`peak_rss()` runs this module as a child: `python -m models.measure MODEL`.
That child sets glibc's mmap threshold to 64 KiB and takes the service's
session options (2 threads, no CPU arena, no memory pattern, spinning stopped
after a run) but onnxruntime's own optimisers; `service_run` measures a model
exactly as a worker runs it (isnet_wsgi.model.segmenter.Segmenter, the Makefile's
malloc environment).
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

M_MMAP_THRESHOLD = -3  # glibc mallopt parameter number, from <malloc.h>
MMAP_THRESHOLD_BYTES = 64 * 1024
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
    """An onnxruntime session fed as the fp32 model is: float32 x/255 - 0.5.

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

    from models.quantize import input_quantisation

    return ModelSession(session, input_quantisation(onnx.load(str(model_path))))


def predict_mask(session: ModelSession, batch: np.ndarray) -> np.ndarray:
    """The model's output min-max normalised to [0, 1] (epsilon: a flat map stays finite)."""
    output = session.run(batch)[0, 0]
    low, high = float(output.min()), float(output.max())
    return (output - low) / (high - low + 1e-6)


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


def _peak_rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _child(model_path: Path, photo: Path, runs: int) -> dict:
    """Runs in the fresh process: load, infer `runs` times, report."""
    ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
    from PIL import Image

    from models.calibrate import to_input

    started = time.perf_counter()
    session = open_session(model_path)
    load_s = time.perf_counter() - started
    with Image.open(photo) as image:
        # Only the input the model takes stays alive, as in the service.
        batch = session.prepare(to_input(image))
    run_s = []
    for _ in range(runs):
        started = time.perf_counter()
        predict_mask(session, batch)
        run_s.append(time.perf_counter() - started)
    return {"peak_rss_mb": round(_peak_rss_mb(), 1), "load_s": round(load_s, 2),
            "run_s": round(min(run_s), 2), "runs": runs}


def peak_rss(model_path: Path, photo: Path, runs: int = 1) -> dict:
    """Measure in a fresh child process; returns the child's report."""
    env = dict(os.environ, ORT_DISABLE_TELEMETRY="1")
    result = subprocess.run(
        [sys.executable, "-m", "models.measure", str(model_path), str(photo), str(runs)],
        check=True, capture_output=True, text=True, env=env,
        cwd=Path(__file__).resolve().parent.parent,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


# The Makefile's (and the image's) malloc settings, for a child measured as the service runs.
SERVICE_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "131072",
               "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1", "ORT_DISABLE_TELEMETRY": "1"}
SERVICE_CHILD_TIMEOUT_S = 300


def _service_child(model_path: Path, manifest_path: Path, tensor_path: Path, runs: int) -> dict:
    """In a fresh process that imports only what a worker does: the service's
    session (isnet_wsgi/model/segmenter.py), `runs` inferences on a saved input, VmHWM."""
    from isnet_wsgi.model.segmenter import ModelFile, Segmenter, SessionOptions

    manifest = json.loads(manifest_path.read_text())
    segmenter = Segmenter("measured", ModelFile.open_verified(model_path, manifest["sha256"]), manifest,
                          SessionOptions())
    segmenter.start()
    tensor = np.load(tensor_path)
    seconds = []
    for _ in range(runs):
        started = time.perf_counter()
        segmenter.run(tensor)
        seconds.append(time.perf_counter() - started)
    return {"peak_rss_mb": round(_peak_rss_mb(), 1), "run_s": seconds}


def service_run(model_path: Path, manifest_path: Path, tensor_path: Path, runs: int) -> dict:
    """_service_child in its own process group, which is stopped whole if anything goes wrong."""
    import signal

    command = [sys.executable, "-m", "models.measure", "--service", str(model_path), str(manifest_path),
               str(tensor_path), str(runs)]
    child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, start_new_session=True,
                             env={**os.environ, **SERVICE_ENV}, cwd=Path(__file__).resolve().parent.parent)
    try:
        stdout, _ = child.communicate(timeout=SERVICE_CHILD_TIMEOUT_S)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
    if child.returncode != 0:
        raise RuntimeError(f"measuring {model_path.name} failed (exit {child.returncode})")
    return json.loads(stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    if sys.argv[1] == "--service":
        model_arg, manifest_arg, tensor_arg, runs_arg = sys.argv[2:6]
        print(json.dumps(_service_child(Path(model_arg), Path(manifest_arg), Path(tensor_arg), int(runs_arg))))
    else:
        model_arg, photo_arg, runs_arg = sys.argv[1], sys.argv[2], int(sys.argv[3])
        print(json.dumps(_child(Path(model_arg), Path(photo_arg), runs_arg)))
