"""One frontier point in a fresh process: create the session, run it, report.

    python -m bench.one_config --json --config service-now --model M.onnx --tensors DIR

Started by bench/frontier.py with the point's environment already in place
(malloc variables and LD_PRELOAD only act at process start). Prints one JSON
object: load seconds, first and median/p95 run seconds, VmHWM after loading
and after all runs. The model is read into memory and the session made from
the bytes, as the service does.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
import onnxruntime as ort  # noqa: E402

from bench.configs import BY_NAME, Config  # noqa: E402
from bench.stats import percentile  # noqa: E402
from isnet_wsgi.model.session import SessionOptions  # noqa: E402
from isnet_wsgi.model.session import session_options as service_session_options  # noqa: E402
from isnet_wsgi.runtime import memory  # noqa: E402

_OPT_LEVELS = {
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
}


def session_options(config: Config) -> ort.SessionOptions:
    if config.ort_defaults:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        return options
    # The service's own options (isnet_wsgi.model.segmenter), then what this point changes.
    options = service_session_options(SessionOptions(
        intra_op_threads=config.intra_op_threads or len(os.sched_getaffinity(0)),
        cpu_arena=config.cpu_arena or config.arena_cfg is not None, arena_mb=config.arena_mb,
        memory_pattern=config.memory_pattern, spin_stop=config.spin_stop))
    options.graph_optimization_level = _OPT_LEVELS[config.graph_optimization]
    if not config.allow_spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    for key, value in config.session_entries:
        options.add_session_config_entry(key, value)
    if not config.prepacking:
        options.add_session_config_entry("session.disable_prepacking", "1")
    if config.arena_cfg is not None:
        # The CPU EP's own arena takes no settings from Python; a shared
        # ("environment") arena registered with an OrtArenaCfg does.
        memory_info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR,
                                        0, ort.OrtMemType.DEFAULT)
        ort.create_and_register_allocator(memory_info, ort.OrtArenaCfg(dict(config.arena_cfg)))
        options.add_session_config_entry("session.use_env_allocators", "1")
    return options


class Runner:
    """Runs the session plainly, or through an IOBinding with buffers made once."""

    def __init__(self, session: ort.InferenceSession, config: Config, input_shape):
        self.session = session
        self.input_name = session.get_inputs()[0].name
        self.binding = None
        if config.iobinding:
            self._bind(input_shape)

    def _bind(self, input_shape) -> None:
        output = self.session.get_outputs()[0]
        dtype = np.uint8 if self.session.get_inputs()[0].type == "tensor(uint8)" else np.float32
        self.input_value = ort.OrtValue.ortvalue_from_shape_and_type(input_shape, dtype, "cpu")
        self.binding = self.session.io_binding()
        self.binding.bind_ortvalue_input(self.input_name, self.input_value)
        if all(isinstance(dim, int) for dim in output.shape):
            self.output_value = ort.OrtValue.ortvalue_from_shape_and_type(
                output.shape, np.float32, "cpu")
            self.binding.bind_ortvalue_output(output.name, self.output_value)
        else:  # a symbolic output shape: let onnxruntime allocate it
            self.output_value = None
            self.binding.bind_output(output.name, "cpu")

    def run(self, tensor: np.ndarray) -> np.ndarray:
        if self.binding is None:
            return self.session.run(None, {self.input_name: tensor})[0]
        self.input_value.update_inplace(tensor)
        self.session.run_with_iobinding(self.binding)
        if self.output_value is None:
            return self.binding.get_outputs()[0].numpy()
        return self.output_value.numpy()


def load(config: Config, model_path: Path) -> tuple[ort.InferenceSession, float]:
    started = time.perf_counter()
    model_bytes = model_path.read_bytes()
    session = ort.InferenceSession(model_bytes, sess_options=session_options(config),
                                   providers=["CPUExecutionProvider"],
                                   disabled_optimizers=list(config.disabled_optimizers))
    return session, time.perf_counter() - started


def measure(config: Config, model_path: Path, tensor_paths: list[Path], runs: int) -> dict:
    session, load_s = load(config, model_path)
    hwm_load_mb = memory.peak_rss_mb(os.getpid())
    first = np.load(tensor_paths[0])
    runner = Runner(session, config, first.shape)
    seconds = []
    for index in range(runs + 1):  # run 0 is the warm-up, reported on its own
        tensor = np.load(tensor_paths[index % len(tensor_paths)])
        started = time.perf_counter()
        output = runner.run(tensor)
        seconds.append(time.perf_counter() - started)
        del tensor, output
    measured = seconds[1:]
    return {
        "name": config.name, "ok": True, "load_s": round(load_s, 3),
        "first_s": round(seconds[0], 3),
        "median_s": round(statistics.median(measured), 3),
        "p95_s": round(percentile(measured, 95), 3),
        "runs_s": [round(s, 3) for s in measured],
        "hwm_load_mb": hwm_load_mb,
        "hwm_mb": memory.peak_rss_mb(os.getpid()),
        "rss_end_mb": memory.rss_mb(os.getpid()),
    }


def serve(config: Config, model_path: Path, tensor_shape) -> None:
    """Line protocol for side-by-side timing: read a .npy path, run it, print
    {"seconds", "hwm_mb"}; an empty line or end of input stops."""
    session, load_s = load(config, model_path)
    runner = Runner(session, config, tensor_shape)
    print(json.dumps({"ready": True, "load_s": round(load_s, 3),
                      "hwm_mb": memory.peak_rss_mb(os.getpid())}), flush=True)
    for line in sys.stdin:
        if not line.strip():
            break
        tensor = np.load(line.strip())
        cpu_before, started = _cpu_s(), time.perf_counter()
        runner.run(tensor)
        seconds, cpu_s = time.perf_counter() - started, _cpu_s() - cpu_before
        print(json.dumps({"seconds": round(seconds, 4), "cpu_s": round(cpu_s, 3),
                          "hwm_mb": memory.peak_rss_mb(os.getpid()),
                          "rss_mb": memory.rss_mb(os.getpid())}), flush=True)


def _cpu_s() -> float:
    """CPU seconds of every thread of this process (user + system, page faults included)."""
    times = os.times()
    return times.user + times.system


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.one_config")
    parser.add_argument("--config", help="a name from bench/configs.py")
    parser.add_argument("--spec", help="a Config as JSON (overrides --config)")
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--tensors", type=Path, required=True, help="folder of .npy inputs")
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--serve", action="store_true",
                        help="run the tensors named on stdin, one per line (see serve())")
    args = parser.parse_args(argv)
    config = Config(**json.loads(args.spec)) if args.spec else BY_NAME[args.config]
    tensor_paths = sorted(args.tensors.glob("*.npy"))
    if args.serve:
        serve(config, args.model, np.load(tensor_paths[0]).shape)
        return 0
    try:
        result = measure(config, args.model, tensor_paths, args.runs)
    except Exception as error:  # a point that cannot run is a row, not a crash
        result = {"name": config.name, "ok": False, "error": f"{type(error).__name__}: {error}"}
    print(json.dumps(result) if args.json else json.dumps(result, indent=1))
    sys.stdout.flush()
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())

