"""The service's overhead: /api/bg/remove through gunicorn vs a bare session.

Three things run at once and are timed in turn over the same photos:
the service (HTTP, multipart, decode, resize, inference, mask, PNG encode),
a bare onnxruntime session with the service's session options and malloc
environment, and a bare session with onnxruntime's defaults. Also the
worker's VmHWM after start-up and after its first 1024-px request.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from bench import photos
from bench.bare import BareSession
from bench.configs import BY_NAME, Config
from bench.servers import OurService
from isnet_wsgi.runtime import memory


def _worker_peaks(service: OurService, upload) -> dict:
    worker = service.worker_pids()[0]
    idle_hwm = memory.peak_rss_mb(worker)
    started = time.perf_counter()
    service.remove_background(*upload)
    return {"worker_pid": worker, "worker_hwm_idle_mb": idle_hwm,
            "first_request_s": time.perf_counter() - started,
            "worker_hwm_one_request_mb": memory.peak_rss_mb(worker)}


def run(service_model_path: Path, model: Path, tensors: Path, *, bare_config: Config,
        service_config: Config | None, rounds: int, log=print) -> dict:
    uploads = photos.uploads()
    tensor_paths = sorted(tensors.glob("*.npy"))
    by_stem = {path.stem: path for path in tensor_paths}
    seconds = {"service": [], "bare": [], "bare-ort-defaults": []}
    with OurService.create(service_model_path, tensors.parent, service_config) as service:
        service.start()
        facts = _worker_peaks(service, uploads[0])
        log(f"  worker VmHWM {facts['worker_hwm_idle_mb']:.0f} MB idle, "
            f"{facts['worker_hwm_one_request_mb']:.0f} MB after one 1024-px request")
        with BareSession(bare_config, model, tensors) as bare, \
                BareSession(BY_NAME["ort-defaults"], model, tensors) as defaults:
            bare.run(tensor_paths[0])  # warm-up, as the service's first request was
            defaults.run(tensor_paths[0])

            def tensor_of(name: str, data: bytes) -> Path:
                return by_stem[Path(name).stem]

            # (label, what it sends, built before the clock starts; the exchange, timed)
            steps = [("service", lambda name, data: service.removal(name, photos.unique(data)),
                      service.send),
                     ("bare", tensor_of, lambda path: bare.run(path)["seconds"]),
                     ("bare-ort-defaults", tensor_of, lambda path: defaults.run(path)["seconds"])]
            for round_index in range(rounds):
                for index, upload in enumerate(uploads):
                    shift = (round_index + index) % len(steps)  # rotate who goes first
                    for label, prepare, step in steps[shift:] + steps[:shift]:
                        sent = prepare(*upload)
                        started = time.perf_counter()
                        answer = step(sent)
                        # The bare children time the run itself: no pipe overhead.
                        spent = answer if isinstance(answer, float) else time.perf_counter() - started
                        seconds[label].append(spent)
            facts["bare_hwm_mb"] = bare.last["hwm_mb"]
            facts["bare_ort_defaults_hwm_mb"] = defaults.last["hwm_mb"]
        facts["worker_hwm_end_mb"] = memory.peak_rss_mb(facts["worker_pid"])
    medians = {label: statistics.median(values) for label, values in seconds.items()}
    facts.update({"median_s": medians, "runs": {k: len(v) for k, v in seconds.items()},
                  "service_over_bare": medians["service"] / medians["bare"],
                  "ort_defaults_over_bare": medians["bare-ort-defaults"] / medians["bare"]})
    return facts
