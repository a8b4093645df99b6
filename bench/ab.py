"""Variants of the service side by side: requests alternated, in the same minutes.

    python -m bench ab [--rounds N] [--model M.onnx] [--bare] [--gap S] VARIANT VARIANT ...

A VARIANT is ``name[@checkout][:NAME=VALUE,NAME=VALUE...]``: the service
started as `make run` starts it (bench/harness.py), from ``checkout`` (a git
worktree, say; default this one), with these variables on top of make run's
environment; ``MODEL_PATH=other.onnx`` (its manifest beside it) serves
another model file than ``--model``, so two builds run in the same minutes;
``LD_PRELOAD=...`` is passed as given. All variants run at once; every round
posts each photo to each of them in turn, the order rotated, so machine load
falls on all alike. ``--bare`` adds bare onnxruntime sessions on the same
model file to the rotation: onnxruntime's default options (rembg's), the
ratio's reference, and the service's point (bench/overhead.py times them the
same way); a variant on another model file gets its own bare defaults
session on that file, and its ratio is to that one.

Per variant: median and p95 latency, the ratio to the first variant (and to
the bare defaults), the worker's VmHWM after its first 1024-px request and at
the end, and its minor page faults per request (/proc/PID/stat). Last, whether
every variant answered every photo with the same bytes (or the same pixels).

``--gap S`` leaves the machine idle for S seconds before each timed step,
as a request after a pause meets it; back to back (the default), one
variant's request follows another's work.
"""

from __future__ import annotations

import contextlib
import io
import os
import statistics
import tempfile
from pathlib import Path

from PIL import Image

from bench import harness, photos
from bench.bare import BareSession
from bench.configs import by_name
from bench.overhead import bare_steps
from bench.stats import percentile
from isnet_wsgi.model.modelfile import read_manifest
from isnet_wsgi.model.segmenter import ModelInput
from isnet_wsgi.runtime import memory

HELP = "variants of the service (checkouts, environments) side by side, requests alternated"


def add_arguments(parser) -> None:
    parser.add_argument("variants", nargs="+", metavar="VARIANT",
                        help="name[@checkout][:NAME=VALUE,...]")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--bare", action="store_true",
                        help="add bare sessions (onnxruntime's defaults, the service's point)")
    parser.add_argument("--gap", type=float, default=0.0, metavar="S",
                        help="seconds of an idle machine before each timed step")


def parse_variant(text: str) -> tuple[str, Path, dict[str, str]]:
    head, _, env_text = text.partition(":")
    name, _, checkout = head.partition("@")
    env = dict(item.split("=", 1) for item in env_text.split(",") if item)
    return name, Path(checkout or harness.ROOT).resolve(), env


def minor_faults(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as stat:
        # Fields after the command's closing parenthesis; minflt is field 10.
        return int(stat.read().rsplit(")", 1)[1].split()[7])


def _bare_sessions(models_served: dict[str, Path], model: Path, folder: Path, stack) -> tuple:
    """Bare sessions for the rotation: onnxruntime's defaults on each distinct
    model file (named after the first variant serving it), and the service's
    point on ``model``. Returns (steps, {model file: its defaults label}, sessions)."""
    points = by_name(model)
    steps, bare_of, sessions = [], {}, {}
    files = {file: name for name, file in reversed(models_served.items())}
    for index, (file, served_by) in enumerate(files.items()):
        tensors = folder / f"tensors-{index}"
        tensors.mkdir()
        photos.write_tensors(tensors, ModelInput.from_manifest(read_manifest(file.with_suffix(".json"))))
        suffix = "" if file == model else f"@{served_by}"
        here = {f"bare-ort-defaults{suffix}": points["ort-defaults"]}
        if file == model:
            here["bare-service-options"] = points["service"]
        bare_of[file] = f"bare-ort-defaults{suffix}"
        for label, point in here.items():
            sessions[label] = stack.enter_context(BareSession(point, file))
            sessions[label].run(sorted(tensors.glob("*.npy"))[0])  # warm-up
            steps += bare_steps({label: sessions[label]}, tensors)
    return steps, bare_of, sessions


def run(args) -> int:
    model = args.model.resolve()
    variants = [parse_variant(text) for text in args.variants]
    names = [name for name, _, _ in variants]
    if len(set(names)) < len(names):
        # NOTE: each name keys its server; a second one would orphan the first, still running.
        raise SystemExit(f"error: every variant needs a name of its own: {' '.join(names)}")
    models_served = {name: Path(env.get("MODEL_PATH", model)).resolve() for name, _, env in variants}
    for name, _, env in variants:  # the service runs from its checkout: give it the absolute path
        if "MODEL_PATH" in env:
            env["MODEL_PATH"] = str(models_served[name])
    uploads = photos.uploads()
    loads = [os.getloadavg()[0]]
    first_hwm: dict[str, float] = {}
    bare_of: dict[Path, str] = {}
    with tempfile.TemporaryDirectory(prefix="bench-ab-") as folder, \
            contextlib.ExitStack() as stack:
        servers = {name: stack.enter_context(harness.service(
            model, Path(folder), env=env, checkout=checkout, label=name))
            for name, checkout, env in variants}
        for server in servers.values():
            server.start()
        workers = {name: server.worker_pids()[0] for name, server in servers.items()}
        for name, server in servers.items():  # the first request, as in bench/overhead.py
            server.remove_background(uploads[0][0], photos.unique(uploads[0][1]))
            first_hwm[name] = memory.peak_rss_mb(workers[name])
        steps = [harness.Step(name, lambda filename, data, server=server: server.removal(
            filename, photos.unique(data)), server.send,
            counter=lambda pid=workers[name]: minor_faults(pid))
            for name, server in servers.items()]
        bare = {}
        if args.bare:
            extra, bare_of, bare = _bare_sessions(models_served, model, Path(folder), stack)
            steps += extra
        timings = harness.interleave(steps, uploads, args.rounds, gap_s=args.gap,
                                     after_round=lambda *_: loads.append(os.getloadavg()[0]))
        end_hwm = {name: memory.peak_rss_mb(pid) for name, pid in workers.items()}
        bare_hwm = {label: session.last["hwm_mb"] for label, session in bare.items()}
    _print_table(args, model, variants, models_served, bare_of, timings, loads,
                 first_hwm, end_hwm, bare_hwm, len(uploads))
    return 0


def _print_table(args, model, variants, models_served, bare_of, timings, loads,
                 first_hwm, end_hwm, bare_hwm, photo_count) -> None:
    seconds, faults = timings.seconds, timings.counts
    first = seconds[variants[0][0]]
    reference = statistics.median(first)
    defaults = statistics.median(seconds["bare-ort-defaults"]) if args.bare else None
    own_defaults = {name: statistics.median(seconds[bare_of[file]])
                    for name, file in models_served.items()} if args.bare else {}
    gap = f"{args.gap:g} s idle before each, " if args.gap else ""
    print(f"model {model.name}, {args.rounds} rounds x {photo_count} photos, {gap}"
          f"load average (1 min) {min(loads):.2f}-{max(loads):.2f}")
    print("| variant | median s | p95 s | vs first (paired) |"
          + (" vs bare ORT defaults (paired) |" if defaults else "")
          + " worker VmHWM MB after 1st / at end | minor faults per request |")
    print("|---" * (6 + bool(defaults)) + "|")
    for label, values in seconds.items():
        median = statistics.median(values)
        row = (f"| {label} | {median:.3f} | {percentile(values, 95):.3f} |"
               f" {median / reference:.3f}x ({paired_ratio(values, first):.3f}x) |")
        if defaults:
            own = bare_of.get(models_served.get(label), "bare-ort-defaults")
            row += (f" {median / own_defaults.get(label, defaults):.3f}x"
                    f" ({paired_ratio(values, seconds[own]):.3f}x) |")
        if label in first_hwm:
            row += (f" {first_hwm[label]:.1f} / {end_hwm[label]:.1f} |"
                    f" {statistics.median(faults[label]):.0f} |")
        else:
            row += f" bare VmHWM {bare_hwm[label]:.1f} | |"
        print(row)
    for name, checkout, env in variants:
        print(f"- {name}: {checkout}, {env or 'make run env'}")
    if defaults and len(bare_of) > 1:
        print("- vs bare ORT defaults: each variant against the bare session on its own model file")
    print("- paired: the median of the ratios of the same photo in the same round, "
          "steadier than the ratio of medians while the machine's load moves")
    print(f"- answers: {_compared(timings.answers)}" + (
        " (expected: the variants serve different model files)"
        if len(set(models_served.values())) > 1 else ""))


def paired_ratio(values: list[float], reference: list[float]) -> float:
    """The median of values[i] / reference[i]: each the same photo, in the same round."""
    return statistics.median(value / base for value, base in zip(values, reference, strict=True))


def _compared(answers: dict[str, dict[str, bytes]]) -> str:
    """Whether every variant answered each photo alike: the same bytes, or
    (an encoder change) other bytes of the same pixels."""
    other_bytes = [photo for photo, by_variant in answers.items()
                   if len(set(by_variant.values())) > 1]
    differing = sorted(photo for photo in other_bytes
                       if len({_pixels(answer) for answer in answers[photo].values()}) > 1)
    if differing:
        return "DIFFER for " + ", ".join(differing)
    if other_bytes:
        return "the same pixels from every variant (other PNG bytes for " + ", ".join(
            sorted(other_bytes)) + ")"
    return "the same bytes from every variant"


def _pixels(png_bytes: bytes) -> tuple[str, tuple[int, int], bytes]:
    with Image.open(io.BytesIO(png_bytes)) as image:
        image.load()
        return image.mode, image.size, image.tobytes()
