"""The service's overhead: /api/bg/remove through gunicorn vs a bare session.

Three things run at once and are timed in turn over the same photos
(bench/harness.py, ``interleave``): the service as `make run` starts it
(HTTP, multipart, decode, resize, inference, mask, PNG encode), a bare
onnxruntime session at the service's point (its session options and
malloc.env), and a bare session with onnxruntime's defaults. Also the
worker's VmHWM after start-up and after its first 1024-px request.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from bench import harness, photos
from bench.bare import BareSession
from bench.configs import by_name
from isnet_wsgi.runtime import memory


def _worker_peaks(service: harness.Server, upload) -> dict:
    worker = service.worker_pids()[0]
    idle_hwm = memory.peak_rss_mb(worker)
    started = time.perf_counter()
    service.remove_background(*upload)
    return {"worker_pid": worker, "worker_hwm_idle_mb": idle_hwm,
            "first_request_s": time.perf_counter() - started,
            "worker_hwm_one_request_mb": memory.peak_rss_mb(worker)}


def bare_steps(sessions: dict[str, BareSession], tensors: Path) -> list[harness.Step]:
    """A step per bare session: the photo's tensor (made beforehand), run in the
    child, which times the run itself (no pipe overhead)."""
    by_stem = {path.stem: path for path in tensors.glob("*.npy")}
    return [harness.Step(label, lambda name, data: by_stem[Path(name).stem],
                         lambda path, session=session: session.run(path)["seconds"])
            for label, session in sessions.items()]


def run(service_model_path: Path, model: Path, tensors: Path, *, rounds: int,
        log=print) -> dict:
    uploads = photos.uploads()
    first_tensor = sorted(tensors.glob("*.npy"))[0]
    points = by_name(model)
    with harness.service(service_model_path, tensors.parent) as service:
        service.start()
        facts = _worker_peaks(service, uploads[0])
        log(f"  worker VmHWM {facts['worker_hwm_idle_mb']:.0f} MB idle, "
            f"{facts['worker_hwm_one_request_mb']:.0f} MB after one 1024-px request")
        with BareSession(points["service"], model) as bare, \
                BareSession(points["ort-defaults"], model) as defaults:
            bare.run(first_tensor)  # warm-up, as the service's first request was
            defaults.run(first_tensor)
            steps = [harness.Step("service", lambda name, data: service.removal(
                name, photos.unique(data)), service.send)]
            steps += bare_steps({"bare": bare, "bare-ort-defaults": defaults}, tensors)
            seconds = harness.interleave(steps, uploads, rounds).seconds
            facts["bare_hwm_mb"] = bare.last["hwm_mb"]
            facts["bare_ort_defaults_hwm_mb"] = defaults.last["hwm_mb"]
        facts["worker_hwm_end_mb"] = memory.peak_rss_mb(facts["worker_pid"])
    medians = {label: statistics.median(values) for label, values in seconds.items()}
    facts.update({"median_s": medians, "runs": {k: len(v) for k, v in seconds.items()},
                  "service_over_bare": medians["service"] / medians["bare"],
                  "ort_defaults_over_bare": medians["bare-ort-defaults"] / medians["bare"]})
    return facts
