"""`python -m bench [frontier|stages|side-by-side|overhead|all] [--quick] ...` (`make bench`).

Prints every table and writes them to bench/results/<date>.md, with a PNG of
the frontier next to it. See bench/README.md for what each section measures.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench import (
    configs,
    frontier,
    modelfile,
    overhead,
    photos,
    report,
    servers,
    sidebyside,
    stages,
)
from models import reference

SECTIONS = ("frontier", "stages", "side-by-side", "overhead")
# (frontier runs per point, -, side-by-side rounds, overhead rounds)
FULL = (6, 1, 3, 4)
QUICK = (4, 1, 1, 1)


def parse(argv):
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("section", nargs="?", default="all", choices=("all",) + SECTIONS)
    parser.add_argument("--quick", action="store_true", help="fewer points and rounds")
    parser.add_argument("--model", type=Path, default=modelfile.default_model(),
                        help="ONNX file to measure (default: the service's model)")
    parser.add_argument("--points", help="comma-separated frontier points (bench/configs.py)")
    parser.add_argument("--runs", type=int, help="timed runs per frontier point (>= 4)")
    parser.add_argument("--rounds", type=int, help="rounds of every section")
    parser.add_argument("--service-config", metavar="POINT",
                        help="run the service at this frontier point instead of `make run`'s")
    parser.add_argument("--no-install", action="store_true",
                        help="skip side-by-side if rembg's venv is missing")
    parser.add_argument("--no-write", action="store_true", help="print only")
    return parser.parse_args(argv)


def machine_header(args, model: Path) -> str:
    load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    import onnxruntime  # noqa: PLC0415  (after ORT_DISABLE_TELEMETRY, set by one_config)
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


def service_point(args):
    if not args.service_config:
        return None
    return configs.BY_NAME[args.service_config]


def bare_point(args):
    """The bare session the service is compared with: same options, same malloc env."""
    point = service_point(args)
    if point is not None:
        return point
    from isnet_wsgi.config import Settings  # noqa: PLC0415
    environ = {**servers.MAKE_RUN_ENV, **os.environ}
    return configs.from_settings(Settings.from_env(environ), environ)


def run_frontier(args, model, tensors, plan, sections):
    names = args.points.split(",") if args.points else (
        configs.QUICK if args.quick else [c.name for c in configs.CANDIDATES])
    points = [configs.BY_NAME[name] for name in names]
    runs = max(4, args.runs or plan[0])
    print(f"frontier: {len(points)} points x {runs} runs, a fresh process each, "
          f"interleaved in groups of {frontier.GROUP_SIZE} + the reference")
    rows = frontier.run(points, model, tensors, runs=runs)
    text = report.frontier_table(rows, configs.BY_NAME)
    sections.append(("Frontier (one fresh process per point; peak = VmHWM)", text))
    return rows


def run_stages(args, model, scratch, plan, sections) -> None:
    runs = max(4, args.runs or plan[0])
    print(f"stages: which stages stay fp32, {len(stages.variants())} model variants x {runs} runs")
    rows = stages.run(model, scratch, bare_point(args), runs=runs)
    sections.append(("Which stages stay fp32 (service's session options, one fresh process "
                     "per variant)", report.stages_table(rows)))


def run_side_by_side(args, model, scratch, plan, sections) -> None:
    if not servers.rembg_installed():
        if args.no_install:
            print("side-by-side: skipped, bench/.venv-rembg is missing (see bench/README.md)")
            return
        servers.install_rembg()
    rounds = args.rounds or plan[2]
    print(f"side-by-side: isnet-wsgi vs rembg, {rounds} round(s) over {len(photos.PHOTO_NAMES)} photos")
    ours = modelfile.servable(model, scratch)
    result = sidebyside.run(modelfile.float_input_twin(model, scratch), ours, scratch,
                            rounds=rounds, service_config=service_point(args))
    sections.append(("Side by side with rembg (same ONNX file, same machine, same run)",
                     report.side_by_side_table(result)))
    # As users run rembg: its own fp32 isnet-general-use, which the fp32
    # widening of the npm weights is (the reference check below says so).
    print("side-by-side: isnet-wsgi vs rembg on its fp32 isnet-general-use")
    as_users = sidebyside.run(reference.fp32_model_path(), ours, scratch, rounds=rounds,
                              service_config=service_point(args))
    as_users["reference_iou"] = sidebyside.reference_check(as_users)
    sections.append(("Side by side with rembg as users run it (its fp32 isnet-general-use)",
                     report.side_by_side_table(as_users)))


def run_overhead(args, model, scratch, tensors, plan, sections) -> None:
    rounds = args.rounds or plan[3]
    print(f"overhead: service vs bare session, {rounds} round(s)")
    facts = overhead.run(modelfile.servable(model, scratch), model, tensors,
                         bare_config=bare_point(args), service_config=service_point(args),
                         rounds=rounds)
    sections.append(("Service overhead (1024-px photos)", report.overhead_table(facts)))


def main(argv=None) -> int:
    args = parse(argv)
    model = args.model.resolve()
    if not model.exists():
        sys.exit(f"error: {model} is missing; run `make model` or pass --model PATH")
    plan = QUICK if args.quick else FULL
    wanted = SECTIONS if args.section == "all" else (args.section,)
    scratch = Path(tempfile.mkdtemp(prefix="isnet-bench-"))
    tensors = scratch / "tensors"
    tensors.mkdir()
    photos.write_tensors(tensors, modelfile.model_input(model))
    header, sections, rows, started = machine_header(args, model), [], None, time.monotonic()
    try:
        if "frontier" in wanted:
            rows = run_frontier(args, model, tensors, plan, sections)
        if "stages" in wanted:
            run_stages(args, model, scratch, plan, sections)
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
    if args.no_write or not sections:
        return
    path = report.write_results(sections, header)
    if rows and any(row.get("ok") for row in rows):
        chart = report.frontier_chart(rows, path.with_suffix(".png"))
        path.write_text(path.read_text() + f"\n![frontier]({chart.name})\n")
    print(f"written: {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}")


if __name__ == "__main__":
    sys.exit(main())
