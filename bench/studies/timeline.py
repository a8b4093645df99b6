"""Where in one inference the resident memory peaks: RSS sampled during a
run, matched to onnxruntime's own per-node profile.

    python -m bench.studies.timeline [--arena-mb N] [--photo coffee.png] [--top 12] [--steps]

One bare session with the service's session options (isnet_wsgi/model/session.py,
or the arena with --arena-mb) in this process; run it under `make run`'s
malloc environment (malloc.env; `make bench` exports it). After a
warm-up run, a thread reads /proc/self/statm every half millisecond while
the next run goes on: onnxruntime releases the GIL for the whole run.
Each node's RSS is the highest sample taken while it ran (its start and
duration from the profile, placed on the run's own start). Printed: the
RSS before the run, the peak and the node it fell in, the nodes with the
highest RSS, and with --steps every node where RSS moved by 3 MB or more.

A node's figure includes what it allocates for itself (the int32 GEMM
buffer, the im2col or indirection buffer of a QLinearConv), which the
profile's own sizes leave out: that is what this is for.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from bench import modelfile, photos
from isnet_wsgi.model.session import (
    DISABLED_OPTIMIZERS,
    SessionOptions,
    ort,
    session_options,
)
from isnet_wsgi.runtime import memory

SAMPLE_INTERVAL_S = 0.0005
# A sample this close to a node's start or end still counts for it: the
# clocks of the profile and of the sampler agree only to about this much.
SLACK_S = 0.0005
STEP_MB = 3.0
_KERNEL_SUFFIX = "_kernel_time"


@dataclass(frozen=True)
class NodeRss:
    """One node of the profiled run and the highest RSS sampled while it ran."""

    start_s: float  # from the start of the run
    duration_s: float
    name: str
    op: str
    output_bytes: int
    rss_mb: float


def node_rss(profile: list[dict], samples: list[tuple[float, float]],
             run_started: float) -> list[NodeRss]:
    """Each node of the profile's last run with its peak sampled RSS, in run order.

    ``samples`` are (perf_counter seconds, RSS MB); ``run_started`` is the
    perf_counter reading taken just before the run. Nodes no sample fell in
    (shorter than the sampling interval) are left out.
    """
    runs = [event for event in profile if event.get("name") == "model_run"]
    if not runs:
        raise ValueError("the profile holds no model_run")
    run_ts = runs[-1]["ts"]
    nodes = []
    for event in profile:
        if event.get("cat") != "Node" or event["ts"] < run_ts \
                or not event["name"].endswith(_KERNEL_SUFFIX):
            continue
        start = (event["ts"] - run_ts) / 1e6
        end = start + event["dur"] / 1e6
        inside = [rss for at, rss in samples
                  if start - SLACK_S <= at - run_started <= end + SLACK_S]
        if inside:
            args = event.get("args", {})
            nodes.append(NodeRss(start, event["dur"] / 1e6,
                                 event["name"].removesuffix(_KERNEL_SUFFIX),
                                 args.get("op_name", ""), int(args.get("output_size", 0)),
                                 max(inside)))
    return sorted(nodes, key=lambda node: node.start_s)


def steps(nodes: list[NodeRss], step_mb: float = STEP_MB) -> list[NodeRss]:
    """The first node, then each node whose RSS is step_mb or more from the last one kept."""
    kept: list[NodeRss] = []
    for node in nodes:
        if not kept or abs(node.rss_mb - kept[-1].rss_mb) >= step_mb:
            kept.append(node)
    return kept


class _Sampler(threading.Thread):
    def __init__(self):
        super().__init__(daemon=True)
        self.samples: list[tuple[float, float]] = []
        self._done = threading.Event()

    def run(self) -> None:
        # memory.rss_mb opens /proc/self/statm each time: ~20 us, well inside the interval.
        while not self._done.is_set():
            self.samples.append((time.perf_counter(), memory.rss_mb()))
            time.sleep(SAMPLE_INTERVAL_S)

    def stop(self) -> None:
        self._done.set()
        self.join()


def profile_run(model: Path, photo: str, arena_mb: int) -> tuple[float, list[NodeRss]]:
    """(RSS MB before the sampled run, its nodes with their RSS)."""
    memory.set_mmap_threshold(SessionOptions().mmap_threshold_kb * 1024)
    options = session_options(SessionOptions(arena_mb=arena_mb))
    with tempfile.TemporaryDirectory(prefix="isnet-timeline-") as scratch:
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(scratch) / "profile")
        session = ort.InferenceSession(str(model), sess_options=options,
                                       providers=["CPUExecutionProvider"],
                                       disabled_optimizers=DISABLED_OPTIMIZERS)
        feed = {session.get_inputs()[0].name:
                modelfile.model_input(model).tensor(photos.load(photo))}
        session.run(None, feed)  # warm-up: the arena, if any, is mapped by now
        sampler = _Sampler()
        sampler.start()
        time.sleep(0.02)
        before_mb = memory.rss_mb()
        started = time.perf_counter()
        session.run(None, feed)
        time.sleep(0.02)
        sampler.stop()
        profile = json.loads(Path(session.end_profiling()).read_text())
    return before_mb, node_rss(profile, sampler.samples, started)


def _line(node: NodeRss) -> str:
    return (f"{node.start_s * 1000:8.1f} ms  {node.rss_mb:6.1f} MB  {node.op:14s} "
            f"out {node.output_bytes / 2**20:5.1f} MiB  {node.duration_s * 1000:6.1f} ms  {node.name}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.studies.timeline", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=modelfile.default_model())
    parser.add_argument("--photo", default="coffee.png", choices=photos.PHOTO_NAMES)
    parser.add_argument("--arena-mb", type=int, default=0)
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--steps", action="store_true", help="every node where RSS moved")
    args = parser.parse_args(argv)
    before_mb, nodes = profile_run(args.model, args.photo, args.arena_mb)
    peak = max(nodes, key=lambda node: node.rss_mb)
    print(f"{args.model.name}, {args.photo}, arena {args.arena_mb} MiB: RSS {before_mb:.1f} MB "
          f"before the run, peak {peak.rss_mb:.1f} MB (+{peak.rss_mb - before_mb:.1f}) "
          f"in {peak.name} ({peak.op})")
    print("\nnodes with the highest RSS:")
    for node in sorted(nodes, key=lambda node: -node.rss_mb)[:args.top]:
        print(_line(node))
    if args.steps:
        print(f"\nwhere RSS moved by {STEP_MB:.0f} MB or more:")
        for node in steps(nodes):
            print(_line(node))


if __name__ == "__main__":
    main()
