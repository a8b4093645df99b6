"""`python -m bench SECTION [options]`: the service's memory and speed, measured.

Every section prints Markdown tables; `all`, `frontier`, `side-by-side` and
`overhead` with `--write` also keep them in bench/results/<date>.md (a PNG of
the frontier beside it). bench/README.md says what each section measures and
how to read it; `python -m bench SECTION --help` gives its options.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench import frontier, modelfile, overhead, photos, rembg, report, sidebyside
from bench.configs import by_name


class FullResolution:
    """bench/full_resolution.py (issue 29) as a section: its run() takes a dict
    of what to measure; an option left out keeps that module's default."""

    HELP = "full-resolution answers: the worker's peak and time by photo size"
    OPTIONS = {  # option -> (its key in run()'s dict, argparse keywords)
        "--parts": ("parts", {"nargs": "+", "help": "peaks, steps, compare, default_path"}),
        "--megapixels": ("megapixels", {"nargs": "+", "type": int,
                                        "help": "photo sizes of the peaks table"}),
        "--cases": ("cases", {"nargs": "+", "help": "answers of the peaks table"}),
        "--arenas": ("arenas", {"nargs": "+", "type": int, "metavar": "MIB",
                                "help": "ORT_ARENA_MB values"}),
        "--repeats": ("repeats", {"type": int, "help": "answers per case"}),
        "--rounds": ("rounds", {"type": int, "help": "rounds of the comparison"}),
        "--before-tree": ("before_tree", {"metavar": "DIR",
                                          "help": "a git archive of the code before"}),
    }

    @classmethod
    def add_arguments(cls, parser) -> None:
        for option, (_, keywords) in cls.OPTIONS.items():
            parser.add_argument(option, **keywords)

    @classmethod
    def run(cls, args) -> int:
        from bench import full_resolution  # noqa: PLC0415
        os.environ["MODEL_PATH"] = str(args.model)  # its children serve this model
        full_resolution.run({key: getattr(args, key) for key, _ in cls.OPTIONS.values()
                             if getattr(args, key) is not None})
        return 0


# Sections in modules of their own: `python -m bench NAME` imports the module
# (or takes the object) and calls its add_arguments(parser) and run(args) ->
# exit status. HELP is its line in `--help`.
MODULE_SECTIONS = {
    "ab": "bench.ab",
    "breakdown": "bench.breakdown",
    "own-work": "bench.own_work",
    "full-resolution": FullResolution,
    "slow-clients": "bench.slow_clients",
}

# (frontier runs per point, side-by-side rounds, overhead rounds)
FULL = (6, 3, 4)
QUICK = (4, 1, 1)


def parse(argv):
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--model", type=Path, default=modelfile.default_model(),
                        help="ONNX file to measure (default: the service's model)")
    sections = parser.add_subparsers(dest="section", required=True, metavar="SECTION")
    for name, help_text in (("all", "frontier, side-by-side and overhead (make bench, then slow-clients)"),
                            ("frontier", "the live points, bare sessions, interleaved"),
                            ("side-by-side", "our service against rembg's server"),
                            ("overhead", "the service against a bare session")):
        section = sections.add_parser(name, parents=[common], help=help_text)
        section.add_argument("--write", action="store_true",
                             help="also write the tables to bench/results/<date>.md")
        section.add_argument("--quick", action="store_true", help="fewer runs and rounds")
        if name in ("all", "frontier"):
            section.add_argument("--points", help="comma-separated point names (default: "
                                 "every live point, bench/configs.py)")
            section.add_argument("--runs", type=int, help="timed runs per point (>= 4)")
        if name != "frontier":
            section.add_argument("--rounds", type=int, help="rounds over the photos")
        if name in ("all", "side-by-side"):
            section.add_argument("--no-install", action="store_true",
                                 help="skip side-by-side if rembg's venv is missing")
    for name, where in MODULE_SECTIONS.items():
        module = importlib.import_module(where) if isinstance(where, str) else where
        section = sections.add_parser(name, parents=[common], help=module.HELP,
                                      description=module.__doc__,
                                      formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(section)
        section.set_defaults(module=module)
    return parser.parse_args(argv)


def machine_header(model: Path) -> str:
    load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    import onnxruntime  # noqa: PLC0415  (slow to import; only here)
    return "\n".join([
        f"# Benchmark {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC\n",
        f"- command: `python -m bench {' '.join(sys.argv[1:])}`",
        f"- machine: {os.cpu_count()} CPUs ({_cpu_model()}), {platform.release()}, "
        f"load average at start {load} (shared machine: see ratios, not absolutes)",
        f"- onnxruntime {onnxruntime.__version__}, Python {platform.python_version()}",
        f"- model: `{model}` ({model.stat().st_size / 2**20:.1f} MiB, "
        f"sha256 {modelfile.sha256(model)[:16]}...)",
        f"- photos: {', '.join(photos.PHOTO_NAMES)} from tests/data, upscaled to "
        f"{photos.LONG_SIDE_PX} px long side\n"])


def _cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def run_frontier(args, model, tensors, plan, sections):
    points = by_name(model)
    names = args.points.split(",") if args.points else list(points)
    unknown = [name for name in names if name not in points]
    if unknown:
        raise SystemExit(f"error: no point {', '.join(unknown)}; the points: {', '.join(points)}")
    runs = max(4, args.runs or plan[0])
    print(f"frontier: {len(names)} points x {runs} runs, a fresh process each, "
          f"interleaved in groups of {frontier.GROUP_SIZE} + the reference")
    rows = frontier.run([points[name] for name in names], model, tensors, runs=runs)
    sections.append(("Frontier (one fresh process per point; peak = VmHWM)",
                     report.frontier_table(rows, points)))
    return rows


def run_side_by_side(args, model, scratch, plan, sections) -> None:
    if not rembg.installed():
        if args.no_install:
            print("side-by-side: skipped, bench/.venv-rembg is missing (see bench/README.md)")
            return
        rembg.install()
    from models import reference  # noqa: PLC0415  (the build's cached fp32 graph)
    rounds = args.rounds or plan[1]
    print(f"side-by-side: isnet-wsgi vs rembg, {rounds} round(s) over {len(photos.PHOTO_NAMES)} photos")
    ours = modelfile.servable(model, scratch)
    result = sidebyside.run(modelfile.float_input_twin(model, scratch), ours, scratch,
                            rounds=rounds)
    sections.append(("Side by side with rembg (same ONNX file, same machine, same run)",
                     report.side_by_side_table(result)))
    # As users run rembg: its own fp32 isnet-general-use, which the fp32
    # widening of the npm weights is (the reference check below says so).
    print("side-by-side: isnet-wsgi vs rembg on its fp32 isnet-general-use")
    as_users = sidebyside.run(reference.fp32_model_path(), ours, scratch, rounds=rounds)
    as_users["reference_iou"] = sidebyside.reference_check(as_users)
    sections.append(("Side by side with rembg as users run it (its fp32 isnet-general-use)",
                     report.side_by_side_table(as_users)))


def run_overhead(args, model, scratch, tensors, plan, sections) -> None:
    rounds = args.rounds or plan[2]
    print(f"overhead: service vs bare session, {rounds} round(s)")
    facts = overhead.run(modelfile.servable(model, scratch), model, tensors, rounds=rounds)
    sections.append(("Service overhead (1024-px photos)", report.overhead_table(facts)))


def run_measurements(args) -> int:
    """all, frontier, side-by-side, overhead: one header, their tables, one file."""
    model = args.model
    plan = QUICK if args.quick else FULL
    wanted = ("frontier", "side-by-side", "overhead") if args.section == "all" else (args.section,)
    scratch = Path(tempfile.mkdtemp(prefix="isnet-bench-"))
    tensors = scratch / "tensors"
    tensors.mkdir()
    photos.write_tensors(tensors, modelfile.model_input(model))
    header, sections, rows, started = machine_header(model), [], None, time.monotonic()
    try:
        if "frontier" in wanted:
            rows = run_frontier(args, model, tensors, plan, sections)
        if "side-by-side" in wanted:
            run_side_by_side(args, model, scratch, plan, sections)
        if "overhead" in wanted:
            run_overhead(args, model, scratch, tensors, plan, sections)
    finally:
        _finish(args, header, sections, rows, time.monotonic() - started)
    shutil.rmtree(scratch, ignore_errors=True)  # kept (logs) only when a section failed
    return 0


def _finish(args, header, sections, rows, elapsed_s) -> None:
    header += f"- wall time: {elapsed_s / 60:.1f} min\n"
    print("\n" + header)
    for title, text in sections:
        print(f"## {title}\n\n{text}\n")
    if not args.write or not sections:
        return
    path = report.write_results(sections, header)
    if rows and any(row.get("ok") for row in rows):
        chart = report.frontier_chart(rows, path.with_suffix(".png"))
        path.write_text(path.read_text() + f"\n![frontier]({chart.name})\n")
    print(f"written: {path}")


def main(argv=None) -> int:
    args = parse(argv)
    args.model = args.model.resolve()
    if not args.model.exists():
        sys.exit(f"error: {args.model} is missing; run `make model` or pass --model PATH")
    if hasattr(args, "module"):
        return args.module.run(args)
    return run_measurements(args)


if __name__ == "__main__":
    sys.exit(main())
