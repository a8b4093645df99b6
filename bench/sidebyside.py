"""Our service and rembg's server, both running, same photos, requests alternated.

Each server is started alone (so start-up times do not compete), then both
stay up while one client alternates A/B/B/A over the photos: a burst of load
from another job on the shared machine hits both. Latencies exclude each
server's first request (rembg loads its model lazily on it; that cost is in
"first cut-out"). Peak RSS is the sampled peak of each process tree.

Then each server in turn gets CONCURRENT_CLIENTS clients at once, as a
service behind a proxy does: requests/s, latency and the tree's peak under
that load are reported apart from the one-client figures.
"""

from __future__ import annotations

import io
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image

from bench import harness, installsize, photos, procfs
from bench.rembg import REMBG_VENV, Rembg
from bench.stats import percentile
from isnet_wsgi.runtime import memory
from models.measure import mask_iou

SETTLE_S = 2.0  # let a server finish start-up work before reading its idle RSS
CONCURRENT_CLIENTS = 4


def _start(server, log) -> dict:
    healthy_s = server.wait_healthy()
    time.sleep(SETTLE_S)
    log(f"  {server.name}: healthy after {healthy_s:.1f} s, idle RSS "
        f"{procfs.tree_rss_mb(server.pid):.0f} MB")
    return {"healthy_s": healthy_s, "idle_mb": procfs.tree_rss_mb(server.pid)}


def _first_cutout(server, upload, facts: dict) -> bytes:
    started = time.perf_counter()
    answer = server.remove_background(*upload)
    facts["first_request_s"] = time.perf_counter() - started
    facts["first_cutout_s"] = facts["healthy_s"] + facts["first_request_s"]
    return answer


def _alternate(servers, uploads, rounds: int, log) -> tuple[dict, dict]:
    """A/B, then B/A on the next photo (harness.interleave's rotation)."""
    steps = [harness.Step(server.name, lambda filename, data, server=server: server.removal(
        filename, photos.unique(data)), server.send) for server in servers]

    def after_round(round_index: int, timings: harness.Timings) -> None:
        log(f"  round {round_index + 1}: " + ", ".join(
            f"{name} median {statistics.median(values):.2f} s"
            for name, values in timings.seconds.items()))

    timings = harness.interleave(steps, uploads, rounds, after_round=after_round)
    cutouts = {server.name: {photo: answers[server.name]
                             for photo, answers in timings.answers.items()} for server in servers}
    return timings.seconds, cutouts


def _concurrent(server, uploads, log) -> dict:
    """CONCURRENT_CLIENTS clients, each sending every photo once, all at once."""
    def client(offset: int) -> list[float]:
        seconds = []
        for index in range(len(uploads)):
            filename, data = uploads[(offset + index) % len(uploads)]
            removal = server.removal(filename, photos.unique(data))
            started = time.perf_counter()
            server.send(removal)
            seconds.append(time.perf_counter() - started)
        return seconds

    with procfs.TreeSampler(server.pid) as sampler:
        started = time.perf_counter()
        with ThreadPoolExecutor(CONCURRENT_CLIENTS) as pool:
            seconds = [s for each in pool.map(client, range(CONCURRENT_CLIENTS)) for s in each]
        wall_s = time.perf_counter() - started
    log(f"  {server.name}, {CONCURRENT_CLIENTS} clients: {len(seconds) / wall_s:.2f} requests/s")
    return {"concurrent_requests_per_s": len(seconds) / wall_s,
            "concurrent_median_s": statistics.median(seconds),
            "concurrent_tree_peak_pss_mb": sampler.peak_pss_mb,
            "concurrent_requests": len(seconds)}


def run(model_path: Path, service_model_path: Path, scratch: Path, *, rounds: int,
        log=print) -> dict:
    uploads = photos.uploads()
    ours = harness.service(service_model_path, scratch)
    theirs = Rembg.create(model_path.resolve(), scratch)
    facts = {ours.name: {}, theirs.name: {}}
    with ours, theirs:
        ours.launch()
        with procfs.TreeSampler(ours.pid) as ours_peak:
            facts[ours.name] = _start(ours, log)
            first_workers = ours.worker_pids()
            _first_cutout(ours, uploads[0], facts[ours.name])
            theirs.launch()
            with procfs.TreeSampler(theirs.pid) as theirs_peak:
                facts[theirs.name] = _start(theirs, log)
                _first_cutout(theirs, uploads[0], facts[theirs.name])
                started = time.perf_counter()
                seconds, cutouts = _alternate([ours, theirs], uploads, rounds, log)
                wall_s = time.perf_counter() - started
        workers = ours.worker_pids()
        for server, sampler in ((ours, ours_peak), (theirs, theirs_peak)):
            values = seconds[server.name]
            facts[server.name].update({
                "median_s": statistics.median(values), "p95_s": percentile(values, 95),
                "requests_per_s": len(values) / sum(values), "requests": len(values),
                "tree_peak_mb": sampler.peak_mb, "tree_peak_pss_mb": sampler.peak_pss_mb,
                "after_mb": procfs.tree_rss_mb(server.pid)})
        facts[ours.name]["worker_hwm_mb"] = max(memory.peak_rss_mb(p) for p in workers)
        # The memory guard (MEMORY_LIMIT_MB) replaces a worker that grew too big;
        # a replaced worker's VmHWM no longer covers the whole run.
        facts[ours.name]["worker_recycled"] = workers != first_workers
        facts[theirs.name]["worker_hwm_mb"] = memory.peak_rss_mb(theirs.pid)
        for server in (ours, theirs):
            facts[server.name].update(_concurrent(server, uploads, log))
    facts[ours.name]["install_mb"] = installsize.ours_mb()
    facts[theirs.name]["install_mb"] = installsize.rembg_mb(REMBG_VENV)
    ious = {name: photos.alpha_iou(cutouts[ours.name][name], cutouts[theirs.name][name])
            for name, _ in uploads}
    return {"servers": facts, "iou": ious, "wall_s": wall_s, "ours": ours.name,
            "theirs": theirs.name, "their_cutouts": cutouts[theirs.name]}


def reference_check(result: dict, threads: int = 2) -> dict[str, float]:
    """IoU of each of rembg's cut-outs with models/reference.py's mask of the
    same upload: 1.0 everywhere means the fp32 file served by rembg is the
    reference every fidelity figure is measured against."""
    from models import reference

    session = reference.fp32_session(threads)
    ious = {}
    for name, data in photos.uploads():
        with Image.open(io.BytesIO(data)) as upload:
            wanted = reference.reference_mask(session, upload.convert("RGB"))
        ious[name] = mask_iou(photos.alpha(result["their_cutouts"][name]), wanted)
    return ious
