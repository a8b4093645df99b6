"""The child of bench/bare.py: one bare onnxruntime session at one point.

`python -m bench.bare_child --model M.onnx --spec JSON`, started with the
point's environment (malloc variables and LD_PRELOAD act only at process
start): it reads the model into memory and makes the session from the bytes,
as the service does, answers one JSON line, then runs each tensor path (.npy)
written to its stdin and answers with the run's seconds, CPU seconds and
VmHWM. An empty line or the end of its input stops it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
import onnxruntime as ort  # noqa: E402

from bench.configs import Config  # noqa: E402
from isnet_wsgi.model.session import SessionOptions  # noqa: E402
from isnet_wsgi.model.session import session_options as service_session_options  # noqa: E402
from isnet_wsgi.runtime import memory  # noqa: E402


def session_options(config: Config) -> ort.SessionOptions:
    if config.ort_defaults:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        return options
    # The service's own options (isnet_wsgi.model.session), at this point's settings.
    return service_session_options(SessionOptions(
        intra_op_threads=config.intra_op_threads or len(os.sched_getaffinity(0)),
        cpu_arena=config.cpu_arena, arena_mb=config.arena_mb,
        memory_pattern=config.memory_pattern, spin_stop=config.spin_stop))


def load(config: Config, model_path: Path) -> tuple[ort.InferenceSession, float]:
    started = time.perf_counter()
    session = ort.InferenceSession(model_path.read_bytes(), sess_options=session_options(config),
                                   providers=["CPUExecutionProvider"],
                                   disabled_optimizers=list(config.disabled_optimizers))
    return session, time.perf_counter() - started


def serve(config: Config, model_path: Path) -> None:
    session, load_s = load(config, model_path)
    input_name = session.get_inputs()[0].name
    print(json.dumps({"ready": True, "load_s": round(load_s, 3),
                      "hwm_mb": memory.peak_rss_mb(os.getpid())}), flush=True)
    for line in sys.stdin:
        if not line.strip():
            break
        tensor = np.load(line.strip())
        cpu_before, started = _cpu_s(), time.perf_counter()
        session.run(None, {input_name: tensor})
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
    spec = json.loads(args.spec)
    spec["disabled_optimizers"] = tuple(spec["disabled_optimizers"])
    serve(Config(**spec), args.model)
    return 0


if __name__ == "__main__":
    sys.exit(main())
