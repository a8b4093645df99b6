"""Peak RSS and latency of a built model, each measured in a fresh process.

VmHWM never goes down, so every figure comes from a child: `peak_rss()` runs
`python -m models.footprint MODEL PHOTO RUNS`, which sets glibc's mmap
threshold to 64 KiB and opens the model as measure.open_session does (the
service's session options, onnxruntime's own optimisers), fed the input the
service and rembg make (reference.reference_input). `service_run` measures a
model exactly as a worker runs it (isnet_wsgi.model.segmenter.Segmenter, the
Makefile's malloc environment).
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

M_MMAP_THRESHOLD = -3  # glibc mallopt parameter number, from <malloc.h>
MMAP_THRESHOLD_BYTES = 64 * 1024
PROJECT_DIR = Path(__file__).resolve().parent.parent
# Well above a measurement's time; a hang fails, it never blocks.
CHILD_TIMEOUT_S = 300


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

    from models import (  # here: the service child imports only what a worker does
        measure,
        reference,
    )

    started = time.perf_counter()
    session = measure.open_session(model_path)
    load_s = time.perf_counter() - started
    with Image.open(photo) as image:
        # Only the input the model takes stays alive, as in the service.
        batch = session.prepare(reference.reference_input(image))
    run_s = []
    for _ in range(runs):
        started = time.perf_counter()
        measure.predict_mask(session, batch)
        run_s.append(time.perf_counter() - started)
    return {"peak_rss_mb": round(_peak_rss_mb(), 1), "load_s": round(load_s, 2),
            "run_s": round(min(run_s), 2), "runs": runs}


def peak_rss(model_path: Path, photo: Path, runs: int = 1) -> dict:
    """Measure in a fresh child process; returns the child's report."""
    env = dict(os.environ, ORT_DISABLE_TELEMETRY="1")
    return _report([sys.executable, "-m", "models.footprint", str(model_path), str(photo),
                    str(runs)], env)


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
    """_service_child in a fresh process, in the environment `make run` gives
    the service (malloc.env)."""
    from bench.harness import service_env  # noqa: PLC0415  (see _report)
    return _report([sys.executable, "-m", "models.footprint", "--service", str(model_path),
                    str(manifest_path), str(tensor_path), str(runs)], service_env())


def _report(command: list[str], env: dict[str, str]) -> dict:
    """What a child prints last, as JSON; the child in its own process group,
    stopped whole whatever happens. NOTE: bench/ is imported here, not at
    the top: the build never measures, so the image's build stage needs no bench/."""
    from bench.harness import run  # noqa: PLC0415
    done = run(command, timeout=CHILD_TIMEOUT_S, env=env, cwd=PROJECT_DIR)
    if done.returncode != 0:
        raise RuntimeError(f"measuring in {command[2:4]} failed (exit {done.returncode}): "
                           f"{(done.stderr.strip().splitlines() or ['?'])[-1]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    if sys.argv[1] == "--service":
        model_arg, manifest_arg, tensor_arg, runs_arg = sys.argv[2:6]
        print(json.dumps(_service_child(Path(model_arg), Path(manifest_arg), Path(tensor_arg), int(runs_arg))))
    else:
        model_arg, photo_arg, runs_arg = sys.argv[1], sys.argv[2], int(sys.argv[3])
        print(json.dumps(_child(Path(model_arg), Path(photo_arg), runs_arg)))
