"""The ISNet model and its whole contract: image in, mask out.

``Segmenter.mask`` takes a PIL image and returns the subject's 'L' mask at
the image's size: it makes the input the manifest describes (``ModelInput``),
runs the session, and turns the output into the mask (``mask_from_output``).
Every caller (the pipeline, the command line, the bench, the model build's
measurements) goes through it rather than re-gluing the steps.

``Segmenter.load`` runs at import time in the gunicorn master (preload_app):
it opens the model file and checks it against its manifest, so a missing or
tampered file stops start-up with one clear line. ``start`` runs in each
worker after fork: it reads the bytes, checks them again, and creates the
session there.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..config import Settings
from ..image.resize import Band, resized, resized_bands
from ..runtime import cgroup, memory
from ..runtime.parallel import map_in_threads
from .modelfile import ModelError, ModelFile, read_manifest
from .session import DISABLED_OPTIMIZERS, SessionOptions, ort, session_options


class InferenceTimeout(RuntimeError):
    """A run was stopped because it passed its deadline."""


# glibc heaps per worker: the main thread's, and one every other thread shares
# (isnet_wsgi.memory.limit_arenas).
MALLOC_ARENAS = 2
# The side of ISNet's square input and output; the model build (models/) reads it here.
INPUT_SIZE_PX = 1024
# A flat model output (max == min) must not divide by zero.
_MASK_EPSILON = 1e-6
# rembg's preprocessing, which the model is calibrated on and the fidelity
# figures are measured with (models/reference.py): LANCZOS both ways, and the
# pixels divided by the resized image's own brightest value, not by 255.
# Against BILINEAR and /255 this took the fp32 model from 5 to 23 of 23 hard
# photos within issue 11's targets (rembg's masks exactly), for 5-14 ms more
# per 1024-px request (models/README.md, bench.breakdown).
RESIZE_FILTERS = {"BILINEAR": Image.Resampling.BILINEAR, "LANCZOS": Image.Resampling.LANCZOS}
DIVISORS = ("255", "image_max")


@dataclass(frozen=True)
class ModelInput:
    """What the model takes: RGB resized to ``size_px`` with ``resize``,
    x/d, minus mean, over std per channel, where d is 255 or the resized
    image's brightest value (``divide_by``); as uint8 quantised with (scale,
    zero point) when ``quantisation`` is given (models/quantize.py folds that
    step out of the graph), else float32. ``resize`` also brings the mask back.
    """

    size_px: tuple[int, int] = (INPUT_SIZE_PX, INPUT_SIZE_PX)
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    quantisation: tuple[float, int] | None = None
    resize: str = "LANCZOS"
    divide_by: str = "image_max"

    def __post_init__(self):
        if self.resize not in RESIZE_FILTERS or self.divide_by not in DIVISORS:
            raise ModelError(f"unknown model input: resize {self.resize!r}, divide by {self.divide_by!r}")

    @classmethod
    def from_manifest(cls, manifest: dict) -> "ModelInput":
        given = manifest.get("input", {})
        norm = given.get("normalisation", {})
        quantised = given.get("quantisation")
        return cls(mean=_per_channel(norm.get("mean", 0.5)),
                   std=_per_channel(norm.get("std", 1.0)),
                   quantisation=(float(quantised["scale"]), int(quantised["zero_point"]))
                   if quantised else None,
                   resize=given.get("resize", cls.resize),
                   divide_by=norm.get("divide_by", cls.divide_by))

    @property
    def onnx_type(self) -> str:
        return "tensor(uint8)" if self.quantisation else "tensor(float)"

    @property
    def resample(self) -> Image.Resampling:
        return RESIZE_FILTERS[self.resize]

    def tensor(self, image: Image.Image, *, threads: int = 1) -> np.ndarray:
        """The model's input for ``image``: 1x3xHxW, uint8 or float32.

        PERF: with ``threads``, made in bands, one per thread (resize.py):
        the LANCZOS resize, the lookup and the copy into the tensor each
        release the GIL. In-process, with the service's kept heap (medians of
        15): 14.3 -> 10.3 ms for a 1024x683 photo, 15.1 -> 10.0 for 683x1024;
        a photo already of the input's size stays one band (4.5 ms, no
        faster in two).
        """
        rgb = image.convert("RGB") if image.mode != "RGB" else image
        bands = resized_bands(rgb, self.size_px, self.resample, threads)
        tables = self.value_tables(self._divisor([band for _, band in bands]))
        lookup = self._quantised(tables) if self.quantisation is not None else None
        width, height = self.size_px
        tensor = np.empty((1, 3, height, width), np.float32 if lookup is None else np.uint8)

        def fill(corner_and_band: Band) -> None:
            (left, top), band = corner_and_band
            part = tensor[0, :, top:top + band.height, left:left + band.width]
            if lookup is not None:
                np.copyto(part, np.asarray(band.point(lookup)).transpose(2, 0, 1))
                return
            pixels = np.asarray(band)
            # PERF: one plane at a time, looked up straight from the 8-bit
            # pixels into the tensor: no full-size float temporaries (each a
            # fresh mmap, hence page faults, under the service's malloc settings).
            for plane, channel, table in zip(part, range(3), tables):
                np.take(table, pixels[:, :, channel], out=plane)

        map_in_threads(fill, bands)
        return tensor

    def _divisor(self, bands: list[Image.Image]) -> float:
        if self.divide_by == "255":
            return 255.0
        # rembg: x / max(x.max(), 1e-6). An all-black image is all zero either way.
        return float(max(high for band in bands for _, high in band.getextrema()) or 1)

    def value_tables(self, divisor: float) -> np.ndarray:
        """Per channel, the float32 input value of each 8-bit level (3x256).

        Computed in float64 and rounded once to float32, as rembg's numpy does.
        """
        levels = np.arange(256, dtype=np.float64) / divisor
        mean, std = (np.asarray(v, np.float64)[:, np.newaxis] for v in (self.mean, self.std))
        return ((levels - mean) / std).astype(np.float32)

    def _quantised(self, tables: np.ndarray) -> list[int]:
        """Pillow point() table (256 entries per RGB band): pixel -> uint8 input.

        onnxruntime's QuantizeLinear on the float values (float32 division,
        round half to even, saturate), so the model sees exactly the bytes it
        would have made from the float input.
        """
        scale, zero_point = self.quantisation
        quantised = np.rint(tables / np.float32(scale)) + zero_point
        return np.clip(quantised, 0, 255).astype(np.uint8).ravel().tolist()


def mask_from_output(output: np.ndarray, size: tuple[int, int],
                     resample: Image.Resampling = Image.Resampling.LANCZOS, *,
                     threads: int = 1) -> Image.Image:
    """The model's 1x1xHxW output as an 8-bit mask of the given size.

    rembg's arithmetic, in float32: min-max normalised (the range floored at
    an epsilon, so a flat output becomes all zero, not NaN), times 255,
    clipped and truncated to uint8; then resized with ``resample``, in bands
    on ``threads`` cores (resize.py: 6.9 -> 5.3 ms back to 1024x683).
    """
    scaled = normalised_output(output)
    scaled *= np.float32(255)
    np.clip(scaled, 0, 255, out=scaled)
    return resized(Image.fromarray(scaled.astype(np.uint8), "L"), size, resample, threads)


def normalised_output(output: np.ndarray) -> np.ndarray:
    """The model's 1x1xHxW output min-max normalised to [0, 1], HxW float32.

    rembg's arithmetic, with the range floored at an epsilon (a flat output
    becomes all zero, not NaN). NOTE: a floor, not ``+ 1e-6`` on the range,
    which would turn every saturated pixel's 255 into 254.
    """
    scores = np.asarray(output, dtype=np.float32).reshape(output.shape[-2:])
    low, high = scores.min(), scores.max()
    # In place on one copy: no second full-size float temporary.
    scaled = scores - low
    scaled /= max(high - low, np.float32(_MASK_EPSILON))
    return scaled


def _per_channel(value) -> tuple[float, float, float]:
    values = value if isinstance(value, (list, tuple)) else [value] * 3
    return tuple(float(v) for v in values)


def request_heap_mb(settings: Settings, arena_mb: int) -> int:
    """The heap kept for requests' buffers: only beside an arena, which
    already keeps memory between requests in a container with room for it."""
    return settings.request_heap_mb if arena_mb > 0 else 0


def arena_mb(settings: Settings, container_limit_mb: float | None) -> int:
    """The arena the settings give a worker in a container with this memory
    limit (None: no limit): none below ARENA_MIN_MEMORY_MB.

    NOTE: the arena keeps ~100 MB of onnxruntime's between requests, so a
    large upload's decode (up to DECODE_BUDGET_MB) comes on top of it: the
    worst-case worker peak is 362 MB with it, 265 MB without; the 4-client
    stress workload peaked at 331 MiB in a 512 MiB group with it, 234 MiB
    without (tests/system/test_decode_budget.py, test_container_limit.py).
    """
    if container_limit_mb is not None and container_limit_mb < settings.arena_min_memory_mb:
        return 0
    return settings.ort_arena_mb


class Segmenter:
    """One model, loaded once; one session per worker process."""

    def __init__(self, name: str, model_file: "ModelFile", manifest: dict,
                 options: SessionOptions):
        self.name = name
        self.manifest = manifest
        self.sha256 = manifest["sha256"]
        self.options = options
        self._model_file = model_file
        self._session: ort.InferenceSession | None = None
        self._input_name = ""
        # Read once from the manifest; the size is the session's, once started.
        self.input = ModelInput.from_manifest(manifest)
        # Seconds the last run took inside onnxruntime (the inference metric).
        self.last_run_s = 0.0
        self.load_seconds = 0.0
        self.session_pid: int | None = None
        self.error: str | None = None

    @classmethod
    def load(cls, model_path: Path, manifest_path: Path, options: SessionOptions) -> "Segmenter":
        manifest = read_manifest(manifest_path)
        model_file = ModelFile.open_verified(model_path, manifest["sha256"])
        name = manifest.get("model") or manifest.get("name") or model_path.stem
        return cls(name, model_file, manifest, options)

    @classmethod
    def from_settings(cls, settings: Settings) -> "Segmenter":
        """The model and session options the settings name (verified, not started)."""
        arena = arena_mb(settings, cgroup.memory_limit_mb())
        return cls.load(settings.model_path, settings.manifest_path, SessionOptions(
            intra_op_threads=settings.intra_op_threads,
            cpu_arena=settings.ort_cpu_arena,
            arena_mb=arena,
            memory_pattern=settings.ort_memory_pattern,
            mmap_threshold_kb=settings.malloc_mmap_threshold_kb,
            request_heap_mb=request_heap_mb(settings, arena)))

    @property
    def loaded(self) -> bool:
        return self._session is not None

    def start(self) -> None:
        """Create the session in this process (the worker, after fork)."""
        if self._session is not None:
            return
        memory.set_mmap_threshold(self.options.mmap_threshold_kb * 1024)
        # Before onnxruntime's and the helpers' threads first allocate.
        memory.limit_arenas(MALLOC_ARENAS)
        started = time.perf_counter()
        try:
            model_bytes = self._model_file.verified_bytes()
        except ModelError as error:
            self.error = str(error)
            raise
        try:
            self._session = ort.InferenceSession(
                model_bytes, sess_options=session_options(self.options),
                providers=["CPUExecutionProvider"],
                disabled_optimizers=DISABLED_OPTIMIZERS)
        except Exception as error:  # onnxruntime raises its own exception types
            self.error = f"onnxruntime could not create a session: {error}"
            raise ModelError(self.error) from error
        self.load_seconds = time.perf_counter() - started
        self.session_pid = os.getpid()
        # PERF: the session holds its own copy of the weights, so this process
        # drops the bytes it read, and closes its copy of the master's descriptor.
        # onnxruntime's Python wrapper keeps a reference too ("TODO: This is
        # bad as we're holding the memory indefinitely"); it is needed only to
        # re-create the session on set_providers(), which we never call.
        del model_bytes
        if getattr(self._session, "_model_bytes", None) is not None:
            self._session._model_bytes = None
        self._model_file.close()
        if self.options.request_heap_mb:
            memory.keep_heap(self.options.request_heap_mb << 20)
        model_input = self._session.get_inputs()[0]
        self._input_name = model_input.name
        expected = self.input.onnx_type
        if model_input.type != expected:
            self._session = None
            self.error = (f"the model takes {model_input.type} but its manifest describes "
                          f"{expected}; rebuild both with `make model`")
            raise ModelError(self.error)
        height, width = model_input.shape[-2:]
        if isinstance(height, int) and isinstance(width, int):
            self.input = dataclasses.replace(self.input, size_px=(width, height))

    def mask(self, image: Image.Image, *, timeout_s: float | None = None) -> Image.Image:
        """The subject's alpha for ``image``: an 'L' mask of the image's size.

        A full-resolution request hands it an image of the model's own size
        (``input.size_px``) and brings the mask up a band at a time
        (image/fullsize.py). Raises InferenceTimeout past timeout_s.
        """
        tensor = self.input.tensor(image, threads=self.options.intra_op_threads)
        output = self.run(tensor, timeout_s=timeout_s)
        del tensor  # PERF: no longer needed while the mask is made
        return mask_from_output(output, image.size, self.input.resample,
                                threads=self.options.intra_op_threads)

    def run(self, tensor: np.ndarray, *, timeout_s: float | None = None) -> np.ndarray:
        """One inference. Raises InferenceTimeout past timeout_s."""
        if self._session is None:
            raise ModelError(self.error or "the model session is not started")
        run_options = ort.RunOptions()
        timer = None
        if timeout_s is not None:
            # onnxruntime checks `terminate` between kernels, so a run past its
            # deadline stops within one kernel instead of hanging the worker.
            timer = threading.Timer(timeout_s, setattr, (run_options, "terminate", True))
            timer.daemon = True
            timer.start()
        started = time.perf_counter()
        try:
            return self._session.run(None, {self._input_name: tensor}, run_options)[0]
        except Exception as error:
            if run_options.terminate:
                raise InferenceTimeout(f"inference passed its {timeout_s} s deadline") from None
            raise error
        finally:
            self.last_run_s = time.perf_counter() - started
            if timer is not None:
                timer.cancel()
