"""Where one /api/bg/remove request's time goes, measured inside the gunicorn worker.

`python -m bench breakdown [--requests N] [--checkout DIR] [--env NAME=VALUE ...]`

Starts the service as `make run` does (gunicorn.conf.py, malloc.env,
loopback; bench/harness.py) but through bench/breakdown_gunicorn.py, which wraps
the request path's steps with timers after the worker has started. Each
request appends one JSON line: wall seconds and minor page faults of each
step (multipart read, decode, model input, inference, mask, cut-out, encode,
the whole of gunicorn's handle_request). The client adds its own wall time;
"outside" is what neither the app nor gunicorn's handler saw (connect, the
client's send and receive).

The timers are a few calls to perf_counter and getrusage per step: well
under a millisecond per request.
"""

from __future__ import annotations

import functools
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The steps in request order: (label, module, attribute).
STEPS = (
    ("multipart", "isnet_wsgi.web.api", "read_form"),
    ("decode", "isnet_wsgi.image.decode", "decode"),
    ("model input", "isnet_wsgi.model.segmenter", "ModelInput.tensor"),
    ("inference", "isnet_wsgi.model.segmenter", "Segmenter.run"),
    ("mask", "isnet_wsgi.model.segmenter", "mask_from_output"),
    ("cut-out", "isnet_wsgi.image.compose", "cutout"),
    ("encode", "isnet_wsgi.image.encode", "encode"),
)


# --- In the worker ----------------------------------------------------------

# NOTE: these two run in the worker of the checkout under test, whose own
# isnet_wsgi and tests may predate memory.peak_rss_mb and tests.helpers.reset_peak_rss:
# so they read /proc themselves.
def _hwm_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _reset_hwm() -> None:
    # Linux >= 4.0: VmHWM restarts from the current RSS.
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")


class _Recorder:
    def __init__(self, log_path: str):
        self.log_path = log_path
        self.current: dict = {}
        self.request_hwm_mb = 0.0

    def timed(self, label: str, function, *, outer: bool = False):
        """``function`` timed; an inner step also records the peak RSS it reached."""
        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            if not outer:
                self.request_hwm_mb = max(self.request_hwm_mb, _hwm_mb())
                _reset_hwm()
            faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                spent = time.perf_counter() - started
                # [seconds, minor faults, peak RSS MB]
                step = self.current.setdefault(label, [0.0, 0, 0.0])
                step[0] += spent
                step[1] += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
                step[2] = max(step[2], _hwm_mb())
                if not outer:
                    self.request_hwm_mb = max(self.request_hwm_mb, step[2])
                    _reset_hwm()
        return wrapper

    def flush(self) -> None:
        if self.current:
            # The whole request's peak: its steps' and what came between them.
            self.current["handle_request"][2] = max(self.request_hwm_mb, _hwm_mb())
            with open(self.log_path, "a") as log:
                log.write(json.dumps(self.current) + "\n")
        self.current = {}
        self.request_hwm_mb = 0.0


def instrument(log_path: str, worker) -> None:
    """Wrap each step of STEPS, and the worker's handle_request, with timers."""
    import importlib  # noqa: PLC0415
    recorder = _Recorder(log_path)
    for label, module_name, attribute in STEPS:
        owner = importlib.import_module(module_name)
        *path, name = attribute.split(".")
        for part in path:
            owner = getattr(owner, part)
        original = getattr(owner, name)
        timed = recorder.timed(label, original)
        setattr(owner, name, timed)
        # NOTE: a module that did `from isnet_wsgi.image.encode import encode`
        # holds the function itself: replace it there too.
        for module in list(sys.modules.values()):
            if getattr(module, "__name__", "").startswith("isnet_wsgi"):
                for held_as, value in list(vars(module).items()):
                    if value is original:
                        setattr(module, held_as, timed)
    handle = recorder.timed("handle_request", worker.handle_request, outer=True)

    def handle_request(*args, **kwargs):
        try:
            return handle(*args, **kwargs)
        finally:
            recorder.flush()
    worker.handle_request = handle_request


# --- The driver -------------------------------------------------------------

HELP = "where one request's time goes, step by step, inside the gunicorn worker"


def add_arguments(parser) -> None:
    parser.add_argument("--requests", type=int, default=12)
    parser.add_argument("--photo", default="coffee.png", help="one of bench/photos.py's")
    parser.add_argument("--checkout", type=Path, default=ROOT,
                        help="the service's code from this directory (a git worktree)")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE")


def run(args) -> int:
    from bench import harness, photos  # noqa: PLC0415  (not in the worker, which loads this file)
    env_extra = dict(item.split("=", 1) for item in args.env)
    checkout = args.checkout.resolve()
    name = Path(args.photo).stem + ".png"
    upload = dict(photos.uploads())[name]
    with tempfile.TemporaryDirectory(prefix="breakdown-") as folder:
        log_path = Path(folder) / "steps.jsonl"
        env = {**env_extra, "BREAKDOWN_LOG": str(log_path), "BREAKDOWN_CHECKOUT": str(checkout),
               "PYTHONPATH": f"{checkout}{os.pathsep}{ROOT}"}
        with harness.service(args.model.resolve(), Path(folder), env=env, checkout=checkout,
                             config=str(ROOT / "bench" / "breakdown_gunicorn.py"),
                             label="breakdown") as server:
            try:
                server.start()
            except RuntimeError:
                sys.stderr.write(server.log_path.read_text()[-3000:])
                raise
            server.remove_background(name, photos.unique(upload))  # warm-up, not counted
            step = harness.Step("client", lambda filename, data: server.removal(
                filename, photos.unique(data)), server.send)
            client_s = harness.interleave([step], [(name, upload)], args.requests).seconds["client"]
        records = [json.loads(line) for line in log_path.read_text().splitlines()]
    records = [r for r in records if "inference" in r][1:]  # drop the warm-up
    print(f"photo {name}, {len(records)} requests, checkout {args.checkout}, "
          f"env {env_extra or '-'}, load average {os.getloadavg()[0]:.2f} "
          "(the timers reset VmHWM per step: the peaks are per step, the request's "
          "is handle_request's)")
    _print_table(records, statistics.median(client_s))
    return 0


def _print_table(records: list[dict], total: float) -> None:
    print("| step | median ms | share of client wall | minor faults | peak RSS MB (max) |\n"
          "|---|---|---|---|---|")
    for label, *_ in STEPS + (("handle_request",),):
        if not any(label in r for r in records):
            print(f"| {label} | not called (see STEPS in bench/breakdown.py) | | | |")
            continue
        ms = statistics.median(r[label][0] for r in records if label in r) * 1000
        faults = statistics.median(r[label][1] for r in records if label in r)
        peak = max(r[label][2] for r in records if label in r)
        print(f"| {label} | {ms:.1f} | {ms / 1000 / total:.1%} | {faults:.0f} | {peak:.1f} |")
    rest = statistics.median(r["handle_request"][0] - sum(r[label][0] for label, *_ in STEPS
                                                          if label in r)
                             for r in records)
    print(f"| handle_request less the steps (HTTP, routing, response) | {rest * 1000:.1f} | "
          f"{rest / total:.1%} | | |")
    print(f"| client wall | {total * 1000:.1f} | 100% | | |")
