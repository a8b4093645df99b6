"""Services side by side: variants of the service, requests alternated, in the same minutes.

    python -m bench.ab [--rounds N] [--model M.onnx] [--bare] VARIANT VARIANT ...

A VARIANT is ``name[@checkout][:NAME=VALUE,NAME=VALUE...]``: the service
started as `make run` starts it (bench/servers.py), from ``checkout`` (a git
worktree, say; default this one), with these variables on top of make run's
environment; ``MODEL_PATH=other.onnx`` (its manifest beside it) serves
another model file than ``--model``, so two builds run in the same minutes.
``LD_PRELOAD=...`` is passed as given; ``LD_PRELOAD=thpalign`` is
bench/thpalign.c, built on demand (bench/thpalign.py). All variants run at once;
every round posts each photo to each of them in turn, the order rotated, so
machine load falls on all alike. ``--bare`` adds a bare onnxruntime session
with onnxruntime's default options (rembg's) on the same model file to the
rotation, as the ratio's reference (bench/overhead.py times it the same way);
a variant on another model file gets its own bare session on that file, and
its ratio is to that one.

Per variant: median and p95 latency, the ratio to the first variant (and to
the bare defaults), the worker's VmHWM after its first 1024-px request and at
the end, and its minor page faults per request (/proc/PID/stat).

``--gap S`` leaves the machine idle for S seconds before each timed step,
as a request after a pause meets it; back to back (the default), one
variant's request follows another's work.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

from bench import configs, photos, thpalign
from bench.bare import BareSession
from bench.configs import BY_NAME
from bench.servers import HOST, MAKE_RUN_ENV, OurService
from bench.stats import percentile
from isnet_wsgi.config import Settings
from isnet_wsgi.model.modelfile import read_manifest
from isnet_wsgi.model.segmenter import ModelInput
from isnet_wsgi.runtime import memory
from tests.system.server import free_port

ROOT = Path(__file__).resolve().parent.parent


def parse_variant(text: str) -> tuple[str, Path, dict[str, str]]:
    head, _, env_text = text.partition(":")
    name, _, checkout = head.partition("@")
    env = dict(item.split("=", 1) for item in env_text.split(",") if item)
    if env.get("LD_PRELOAD") == "thpalign":
        env["LD_PRELOAD"] = str(thpalign.library())
    return name, Path(checkout or ROOT).resolve(), env


def service(checkout: Path, model: Path, env_extra: dict, log_dir: Path,
            config: str = "gunicorn.conf.py", label: str = "ab") -> OurService:
    """The service from ``checkout`` on ``model``, as make run starts it, with
    ``env_extra`` on top and gunicorn's ``config`` (bench.breakdown passes its own)."""
    port = free_port()
    env = {**MAKE_RUN_ENV, **os.environ, "MODEL_PATH": str(model), **env_extra, "PORT": str(port),
           "PYTHONUNBUFFERED": "1", "ORT_DISABLE_TELEMETRY": "1"}
    env.pop("API_KEY", None)
    command = [str(ROOT / ".venv" / "bin" / "gunicorn"), "-c", str(checkout / config),
               "--chdir", str(checkout), "--bind", f"{HOST}:{port}"]
    # NOTE: started in the checkout, not with --chdir alone: gunicorn puts
    # its working directory first on sys.path and reads the config (which
    # imports isnet_wsgi) before it applies --chdir, so every variant would
    # otherwise run this checkout's code.
    return OurService(command, env, log_dir / f"{label}-{port}.log", port, cwd=checkout)


def minor_faults(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as stat:
        # Fields after the command's closing parenthesis; minflt is field 10.
        return int(stat.read().rsplit(")", 1)[1].split()[7])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("variants", nargs="+")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "isnet-general-tiny.onnx")
    parser.add_argument("--tensors", type=Path,
                        help="the bare session's inputs (.npy); default: made from the photos")
    parser.add_argument("--bare", action="store_true",
                        help="add a bare session with onnxruntime's defaults to the rotation")
    parser.add_argument("--gap", type=float, default=0.0, metavar="S",
                        help="seconds of an idle machine before each timed step")
    args = parser.parse_args(argv)
    model = args.model.resolve()
    variants = [parse_variant(text) for text in args.variants]
    names = [name for name, _, _ in variants]
    if len(set(names)) < len(names):
        # NOTE: each name keys its server; a second one would orphan the first, still running.
        parser.error(f"every variant needs a name of its own: {' '.join(names)}")
    models_served = {name: Path(env.get("MODEL_PATH", model)).resolve() for name, _, env in variants}
    for name, _, env in variants:  # the service runs from its checkout: give it the absolute path
        if "MODEL_PATH" in env:
            env["MODEL_PATH"] = str(models_served[name])
    bare_of: dict[Path, str] = {}  # model file -> the label of its bare defaults session
    uploads = photos.uploads()
    loads = [os.getloadavg()[0]]
    seconds: dict[str, list[float]] = {name: [] for name, _, _ in variants}
    faults: dict[str, list[int]] = {name: [] for name, _, _ in variants}
    first_hwm: dict[str, float] = {}
    # photo -> variant -> the answer's bytes: every variant must answer the same.
    answers: dict[str, dict[str, bytes]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-ab-") as folder:
        servers = {}
        bare = None
        try:
            for name, checkout, env in variants:
                servers[name] = service(checkout, model, env, Path(folder))
                servers[name].start()
            workers = {name: server.worker_pids()[0] for name, server in servers.items()}
            for name, server in servers.items():  # the first request, as in bench/overhead.py
                server.remove_background(*uploads[0][:1], photos.unique(uploads[0][1]))
                first_hwm[name] = memory.peak_rss_mb(workers[name])
            # Each step: (label, what it sends, built before the clock starts; the exchange, timed).
            steps = [(name, lambda upload, server=server: server.removal(
                upload[0], photos.unique(upload[1])), server.send)
                for name, server in servers.items()]
            if args.bare:
                bare = {}
                lean = configs.from_settings(Settings.from_env({}), MAKE_RUN_ENV)
                # Each distinct file once, named after the first variant serving it.
                files = {file: name for name, file in reversed(models_served.items())}
                for index, (file, served_by) in enumerate(files.items()):
                    tensors = args.tensors if args.tensors and file == model else None
                    if tensors is None:
                        tensors = Path(folder) / f"tensors-{index}"
                        tensors.mkdir()
                        photos.write_tensors(tensors, ModelInput.from_manifest(
                            read_manifest(file.with_suffix(".json"))))
                    by_stem = {path.stem: path for path in tensors.glob("*.npy")}
                    suffix = "" if file == model else f"@{served_by}"
                    sessions = {f"bare-ort-defaults{suffix}": BareSession(BY_NAME["ort-defaults"], file, tensors)}
                    if file == model:
                        sessions["bare-service-options"] = BareSession(lean, file, tensors)
                    bare_of[file] = f"bare-ort-defaults{suffix}"
                    for label, session in sessions.items():
                        bare[label] = session
                        session.run(next(iter(by_stem.values())))  # warm-up
                        seconds[label] = []
                        steps.append((label, lambda upload, by_stem=by_stem:
                                      by_stem[Path(upload[0]).stem],
                                      lambda path, session=session: session.run(path)["seconds"]))
            for round_index in range(args.rounds):
                for index, upload in enumerate(uploads):
                    shift = (round_index + index) % len(steps)
                    for label, prepare, step in steps[shift:] + steps[:shift]:
                        sent = prepare(upload)
                        time.sleep(args.gap)
                        before = minor_faults(workers[label]) if label in workers else 0
                        started = time.perf_counter()
                        answer = step(sent)
                        spent = answer if isinstance(answer, float) else time.perf_counter() - started
                        if isinstance(answer, bytes):
                            answers.setdefault(upload[0], {})[label] = answer
                        seconds[label].append(spent)
                        if label in workers:
                            faults[label].append(minor_faults(workers[label]) - before)
                loads.append(os.getloadavg()[0])
            end_hwm = {name: memory.peak_rss_mb(pid) for name, pid in workers.items()}
            bare_hwm = {label: session.last["hwm_mb"] for label, session in (bare or {}).items()}
        finally:
            for session in (bare or {}).values():
                session.close()
            for server in servers.values():
                server.stop()
    first = seconds[variants[0][0]]
    reference = statistics.median(first)
    defaults = statistics.median(seconds["bare-ort-defaults"]) if args.bare else None
    own_defaults = {name: statistics.median(seconds[bare_of[file]])
                    for name, file in models_served.items()} if args.bare else {}
    gap = f"{args.gap:g} s idle before each, " if args.gap else ""
    print(f"model {model.name}, {args.rounds} rounds x {len(uploads)} photos, {gap}"
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
        if label in faults:
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
    print(f"- answers: {_compared(answers)}" + (
        " (expected: the variants serve different model files)"
        if len(set(models_served.values())) > 1 else ""))
    return 0


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


if __name__ == "__main__":
    sys.exit(main())
