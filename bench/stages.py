"""Which stages stay fp32: model variants, timed side by side in fresh processes.

The shipped model quantises every stage statically except `/side1`, the
1-channel head. Each variant here keeps other stages in fp32 as well (or
none at all), is built from the cached fp32 reference with the build's own
calibration ranges (models/explore.py caches them), and then runs in its own
fresh process with the service's session options and malloc settings. The
processes are loaded at once and run in turn, A B C A B C, like the
frontier, so "time vs default" compares the same minutes of a shared
machine. Fidelity is the lowest IoU against the fp32 model on the held-out
photos and composites (models/report.py). Needs `make model` first (the fp32
reference in the cache) and `onnx` (requirements-dev.txt).
"""

from __future__ import annotations

import dataclasses
import statistics
from pathlib import Path

from bench import modelfile, photos
from bench.bare import BareSession
from bench.configs import Config
from bench.stats import percentile

ENCODER_STEM = ("/conv_in/", "/pool_in/", "/stage1/")
DEEP_STAGES = ("/stage4/", "/stage5/", "/stage6/", "/stage5d/", "/stage4d/",
               "/pool34/", "/pool45/", "/pool56/")
DEFAULT = "only /side1 (default)"


def variants():
    from models import quantize

    return {
        DEFAULT: None,  # the shipped file itself
        "none (/side1 quantised too)": quantize.Recipe(fp32_prefixes=()),
        "/side1 + stage1d (last decoder, 512 px)": quantize.Recipe(
            fp32_prefixes=("/side1/", "/stage1d/")),
        "/side1 + stem and stage1 (first encoder, 512 px)": quantize.Recipe(
            fp32_prefixes=("/side1/",) + ENCODER_STEM),
        "/side1 + stages 4-6 and 4d-5d (64-32 px)": quantize.Recipe(
            fp32_prefixes=("/side1/",) + DEEP_STAGES, dynamic=False),
    }


def build(model: Path, scratch: Path, log=print) -> tuple[dict[str, Path], Path]:
    """Every variant's file (the default is the shipped model), and the fp32
    reference they were built from."""
    from models import build as model_build
    from models import explore, quantize, source

    cache = source.cache_dir()
    reference = model_build.fp32_reference(source.npm_model(cache), cache)
    workbench = explore.Workbench(reference, cache)
    scratch.mkdir(parents=True, exist_ok=True)
    paths = {}
    for index, (name, recipe) in enumerate(variants().items()):
        if recipe is None:
            paths[name] = model
            continue
        log(f"  building: {name}")
        paths[name] = scratch / f"variant-{index}.onnx"
        quantize.quantize(reference, paths[name], lambda: iter(()), recipe,
                          workbench.per_sample("subject"))
    return paths, reference


def _tensors(model: Path, folder: Path) -> list[Path]:
    import onnx

    from models import quantize

    folder.mkdir(parents=True, exist_ok=True)
    # The service's preprocessing, with the variant's own input quantisation.
    model_input = dataclasses.replace(modelfile.model_input(model),
                                      quantisation=quantize.input_quantisation(onnx.load(str(model))))
    return photos.write_tensors(folder, model_input)


def run(model: Path, scratch: Path, config: Config, *, runs: int, log=print) -> list[dict]:
    from models import report

    paths, reference = build(model, scratch / "stages", log)
    tensors = {name: _tensors(path, scratch / "stages" / f"tensors-{i}")
               for i, (name, path) in enumerate(paths.items())}
    sessions = {name: BareSession(config, path, tensors[name][0].parent)
                for name, path in paths.items()}
    seconds = {name: [] for name in paths}
    peaks = {}
    try:
        for session_name, session in sessions.items():
            session.run(tensors[session_name][0])  # warm-up
        for turn in range(runs):
            names = list(sessions)
            shift = turn % len(names)
            for name in names[shift:] + names[:shift]:
                answer = sessions[name].run(tensors[name][turn % len(tensors[name])])
                seconds[name].append(answer["seconds"])
                peaks[name] = answer["hwm_mb"]
    finally:
        for session in sessions.values():
            session.close()
    default_median = statistics.median(seconds[DEFAULT])
    rows = []
    for name, path in paths.items():
        log(f"  fidelity: {name}")
        fidelity = report.fidelity(path, reference)
        rows.append({
            "name": name, "median_s": statistics.median(seconds[name]),
            "p95_s": percentile(seconds[name], 95),
            "vs_default": statistics.median(seconds[name]) / default_median,
            "hwm_mb": peaks[name], "size_mb": path.stat().st_size / 2**20,
            "iou_min": min(row["iou_vs_fp32"] for row in fidelity.values()),
            "runs": len(seconds[name])})
    return rows
