"""The ISNet model: verified in the master, an onnxruntime session in the worker.

``Segmenter.load`` runs at import time in the gunicorn master (preload_app):
it opens the model file and checks it against its manifest, so a missing or
tampered file stops start-up with one clear line. ``start`` runs in each
worker after fork: it reads the bytes, checks them again, and creates the
session there.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from . import memory
from .config import Settings

# NOTE: onnxruntime was seen resolving a telemetry host after import; the
# service makes no network call of its own, so switch that off first.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
import onnxruntime as ort  # noqa: E402


class ModelError(RuntimeError):
    """The model file cannot be used. Start-up stops with this message."""


class InferenceTimeout(RuntimeError):
    """A run was stopped because it passed its deadline."""


@dataclass(frozen=True)
class SessionOptions:
    intra_op_threads: int = 2
    cpu_arena: bool = False
    memory_pattern: bool = False
    mmap_threshold_kb: int = 64


# PERF: onnxruntime's blocked (NCHWc) layout pads the fp32 head's 1-channel
# outputs to 16 channels: the final upsample and sigmoid made 64 MB tensors
# instead of 4 MB. Without it (the rest of the graph is uint8 and does not
# use the layout): bare peak 266 -> 262 MB, 1.22x -> 1.19x of onnxruntime's
# defaults in the same minutes, masks equal within 2.4e-7.
DISABLED_OPTIMIZERS = ["NchwcTransformer"]


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
        self.input_size_px = (1024, 1024)
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
        return cls.load(settings.model_path, settings.manifest_path, SessionOptions(
            intra_op_threads=settings.intra_op_threads,
            cpu_arena=settings.ort_cpu_arena,
            memory_pattern=settings.ort_memory_pattern,
            mmap_threshold_kb=settings.malloc_mmap_threshold_kb))

    @property
    def loaded(self) -> bool:
        return self._session is not None

    @property
    def normalisation(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel (mean, std) from the manifest: input = (x/255 - mean) / std."""
        norm = self.manifest.get("input", {}).get("normalisation", {})
        return _per_channel(norm.get("mean", 0.5)), _per_channel(norm.get("std", 1.0))

    @property
    def input_quantisation(self) -> tuple[float, int] | None:
        """(scale, zero point) when the model takes uint8 input (models/quantize.py)."""
        given = self.manifest.get("input", {}).get("quantisation")
        if not given:
            return None
        return float(given["scale"]), int(given["zero_point"])

    def start(self) -> None:
        """Create the session in this process (the worker, after fork)."""
        if self._session is not None:
            return
        memory.set_mmap_threshold(self.options.mmap_threshold_kb * 1024)
        started = time.perf_counter()
        try:
            model_bytes = self._model_file.verified_bytes()
        except ModelError as error:
            self.error = str(error)
            raise
        try:
            self._session = ort.InferenceSession(
                model_bytes, sess_options=self._session_options(),
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
        model_input = self._session.get_inputs()[0]
        self._input_name = model_input.name
        expected = "tensor(uint8)" if self.input_quantisation else "tensor(float)"
        if model_input.type != expected:
            self._session = None
            self.error = (f"the model takes {model_input.type} but its manifest describes "
                          f"{expected}; rebuild both with `make model`")
            raise ModelError(self.error)
        height, width = model_input.shape[-2:]
        if isinstance(height, int) and isinstance(width, int):
            self.input_size_px = (width, height)

    def _session_options(self) -> ort.SessionOptions:
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.options.intra_op_threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.enable_cpu_mem_arena = self.options.cpu_arena
        options.enable_mem_pattern = self.options.memory_pattern
        options.log_severity_level = 3
        # PERF: the intra-op threads spin between kernels (fast), but not after
        # the run, when this process decodes and encodes on the same cores:
        # 85-89 ms of service overhead per 1024-px request instead of 97-101.
        options.add_session_config_entry("session.force_spinning_stop", "1")
        return options

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
        try:
            return self._session.run(None, {self._input_name: tensor}, run_options)[0]
        except Exception as error:
            if run_options.terminate:
                raise InferenceTimeout(f"inference passed its {timeout_s} s deadline") from None
            raise error
        finally:
            if timer is not None:
                timer.cancel()


def _per_channel(value) -> tuple[float, ...]:
    values = value if isinstance(value, (list, tuple)) else [value] * 3
    return tuple(float(v) for v in values)


def read_manifest(path: Path) -> dict:
    try:
        manifest = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ModelError(f"model manifest {path} is missing; run `make model`") from None
    except (OSError, ValueError) as error:
        raise ModelError(f"model manifest {path} is unreadable: {error}") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("sha256"), str):
        raise ModelError(f"model manifest {path} has no sha256")
    return manifest


class ModelFile:
    """The model file, checked against its sha256 and kept open, not in memory.

    PERF: the gunicorn master keeps the model for every worker it will start.
    Held as bytes, that was 44 MB of private memory in the master for the
    server's whole life: a sixth of the replica's peak (PSS). The master now
    hashes the file in fixed-size reads and keeps only its descriptor; the data
    stays in the page cache, which the kernel can reclaim, and a new worker
    reads it back from the cache in milliseconds.

    NOTE: the descriptor is the file that was checked even if the path is
    later replaced, but a file changed in place would show the change, so
    the worker checks the sha256 again on the bytes it reads: a changed file
    stops that worker instead of loading unverified weights.
    """

    def __init__(self, path: Path, sha256: str, file: BinaryIO):
        self.path = path
        self.sha256 = sha256
        self._file: BinaryIO | None = file

    @classmethod
    def open_verified(cls, path: Path, sha256: str) -> "ModelFile":
        try:
            file = open(path, "rb", buffering=0)
        except FileNotFoundError:
            raise ModelError(f"model file {path} is missing; run `make model`") from None
        except OSError as error:
            raise ModelError(f"model file {path} is unreadable: {error}") from None
        model_file = cls(Path(path), sha256, file)
        try:
            if os.fstat(file.fileno()).st_size == 0:
                raise ModelError(f"model file {path} is empty; rebuild it with `make model`")
            # PERF: hashed in file_digest's fixed-size reads, never held whole.
            model_file._check(hashlib.file_digest(file, "sha256").hexdigest())
        except OSError as error:
            model_file.close()
            raise ModelError(f"model file {path} is unreadable: {error}") from None
        except ModelError:
            model_file.close()
            raise
        return model_file

    def verified_bytes(self) -> bytes:
        """A private copy of the file's bytes, checked again."""
        if self._file is None:
            raise ModelError(f"model file {self.path} was already loaded and released")
        try:
            size = os.fstat(self._file.fileno()).st_size
            parts, offset = [], 0
            while offset < size and (part := os.pread(self._file.fileno(), size - offset, offset)):
                parts.append(part)
                offset += len(part)
        except OSError as error:
            raise ModelError(f"model file {self.path} is unreadable: {error}") from None
        data = b"".join(parts)  # one part (the usual case) is returned, not copied
        self._check(hashlib.sha256(data).hexdigest())
        return data

    def close(self) -> None:
        """Close in this process (the worker, once its session exists)."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def _check(self, digest: str) -> None:
        if digest != self.sha256:
            raise ModelError(
                f"model file {self.path} does not match its manifest (sha256 {digest[:12]}..., "
                f"expected {self.sha256[:12]}...); rebuild it with `make model`")
