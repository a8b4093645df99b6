"""The child of bench/bare.py: one bare onnxruntime session at one point.

`python -m bench.bare_child --model M.onnx --spec JSON`, started with the
point's environment (malloc variables and LD_PRELOAD act only at process
start). A service point starts the service's own Segmenter with the point's
session options, as a worker does after fork (its mmap threshold, malloc
arenas, request heap, the model's bytes dropped); onnxruntime's defaults
make a plain session from the model's bytes, as rembg does. It answers one
JSON line, then runs each tensor path (.npy) written to its stdin and
answers with the run's seconds, CPU seconds and VmHWM. An empty line or the
end of its input stops it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
import onnxruntime as ort  # noqa: E402

from bench.configs import Config  # noqa: E402
from isnet_wsgi.model.segmenter import Segmenter  # noqa: E402
from isnet_wsgi.model.session import SessionOptions  # noqa: E402
from isnet_wsgi.runtime import memory  # noqa: E402


def start(config: Config, model_path: Path) -> Callable[[np.ndarray], object]:
    """The point's session, made; returns its run(tensor)."""
    if config.session is None:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(model_path.read_bytes(), sess_options=options,
                                       providers=["CPUExecutionProvider"])
        input_name = session.get_inputs()[0].name
        return lambda tensor: session.run(None, {input_name: tensor})
    segmenter = Segmenter.load(model_path, model_path.with_suffix(".json"),
                               SessionOptions(**config.session))
    segmenter.start()
    return segmenter.run


def serve(config: Config, model_path: Path) -> None:
    started = time.perf_counter()
    run = start(config, model_path)
    print(json.dumps({"ready": True, "load_s": round(time.perf_counter() - started, 3),
                      "hwm_mb": memory.peak_rss_mb(os.getpid())}), flush=True)
    for line in sys.stdin:
        if not line.strip():
            break
        tensor = np.load(line.strip())
        cpu_before, started = _cpu_s(), time.perf_counter()
        run(tensor)
        seconds, cpu_s = time.perf_counter() - started, _cpu_s() - cpu_before
        print(json.dumps({"seconds": round(seconds, 4), "cpu_s": round(cpu_s, 3),
                          "hwm_mb": memory.peak_rss_mb(os.getpid()),
                          "rss_mb": memory.rss_mb(os.getpid())}), flush=True)


def _cpu_s() -> float:
    """CPU seconds of every thread of this process (user + system, page faults included)."""
    times = os.times()
    return times.user + times.system


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bare_child")
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--spec", required=True, help="a bench.configs.Config as JSON")
    args = parser.parse_args(argv)
    serve(Config(**json.loads(args.spec)), args.model)
    return 0


if __name__ == "__main__":
    sys.exit(main())
