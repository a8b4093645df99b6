"""Try quantisation recipes on the hard set: `python -m models.recipes [NAME ...]`.

Each recipe is built into the cache folder (never over models/), calibrated
on models/hardset/calibration/ only, and scored on the held-out photos with
models/fidelity.py (the service's own mask path against rembg's). Peak RSS
and bare inference time come from fresh child processes that create the
session as the service does (isnet_wsgi/model/segmenter.py's Segmenter, the Makefile's
malloc settings) and run one 1024-px input; the children of all recipes run
in turn, A B C A B C, so time ratios compare the same minutes of a shared
machine. Not part of `make test`; ~5 minutes per recipe on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np

from isnet_wsgi.model.segmenter import INPUT_SIZE_PX
from models import calibrate, explore, fidelity, footprint, quantize, reference, source
from models.fp32 import fp32_reference
from models.manifest import (
    HELD_OUT_DIR,
    MODEL_PATH,
    photos,
    read_manifest,
    variant_manifest,
)

BUILT = "built model (default)"


# The build's own calibration set (calibrate.py): the hard set's calibration
# photos, fed as rembg feeds them; the same with plain whole-image min/max;
# and those photos plus the first set's camera composites.
def _hardset_photos():
    return (fidelity.load_photo(p) for p in calibrate.calibration_photos())


explore.CALIBRATION_SETS["hardset"] = (_hardset_photos, False, reference.reference_input)
explore.CALIBRATION_SETS["hardset-whole"] = (_hardset_photos, True, reference.reference_input)
explore.CALIBRATION_SETS["hardset+composites"] = (
    lambda: (*_hardset_photos(), *(image.convert("RGB") for _, image in calibrate.camera_composites())),
    False, reference.reference_input)
DECODER_512 = ("/side1/", "/stage1d/")
DEEP_STAGES = ("/stage4/", "/stage5/", "/stage6/", "/stage5d/", "/stage4d/", "/pool34/", "/pool45/", "/pool56/")
SIXTEEN_BIT = "hard-set, max, 16-bit activations, float Resizes"
MAX = {"range_aggregate": "max"}
# The rows of models/README.md's table; the earlier rows (float Resizes
# everywhere or above 128 px, fp32 stages, 16-bit) were measured with the
# earlier BILINEAR, x/255 calibration inputs.
RECIPES = {
    "default recipe (hard set, median over photos, every Resize uint8)": explore.Variant(quantize.Recipe(), "hardset"),
    "hard set, max over photos": explore.Variant(quantize.Recipe(**MAX), "hardset"),
    "hard set, 90th percentile": explore.Variant(quantize.Recipe(range_aggregate="p90"), "hardset"),
    "hard set, max, Resizes float up to 64 px": explore.Variant(
        quantize.Recipe(float_resize_max_side_px=64, **MAX), "hardset"),
    "hard set, max, Resizes float up to 128 px": explore.Variant(
        quantize.Recipe(float_resize_max_side_px=128, **MAX), "hardset"),
    "hard set, max, whole-image ranges": explore.Variant(quantize.Recipe(**MAX), "hardset-whole"),
    "hard set + camera composites, max": explore.Variant(quantize.Recipe(**MAX), "hardset+composites"),
    "hard set, max, float Resizes up to 256 px": explore.Variant(
        quantize.Recipe(float_resize_max_side_px=256, **MAX), "hardset"),
    "hard set, max, every Resize float": explore.Variant(quantize.Recipe(uint8_resize=False, **MAX), "hardset"),
    "hard set, max, stages 4-6 and 4d-5d fp32 too": explore.Variant(
        quantize.Recipe(fp32_prefixes=("/side1/",) + DEEP_STAGES, dynamic=False, **MAX), "hardset"),
    SIXTEEN_BIT: explore.Variant(quantize.Recipe(uint8_resize=False, **MAX), "hardset"),
    "hard set, max, stage1d fp32 too": explore.Variant(quantize.Recipe(fp32_prefixes=DECODER_512, **MAX), "hardset"),
}


def build_recipe(bench: explore.Workbench, name: str, variant: explore.Variant) -> tuple[Path, dict]:
    """The recipe's model file in the cache, and the manifest the service reads."""
    out = bench.cache / f"recipe-{list(RECIPES).index(name)}.onnx"
    original = quantize.quantize_static
    if name == SIXTEEN_BIT:
        # NOTE: exploration only: quantize.py fixes uint8 activations (it is
        # build code; changing it would rebuild the shipped model).
        from onnxruntime.quantization import QuantType

        quantize.quantize_static = lambda *a, **k: original(*a, **{**k, "activation_type": QuantType.QUInt16})
    try:
        facts = quantize.quantize(bench.reference, out, lambda: iter(()), variant.recipe,
                                  bench.per_sample(variant.calibration))
    finally:
        quantize.quantize_static = original
    return out, variant_manifest(out, facts["input_quantisation"])


def _service_tensor(manifest: dict, folder: Path) -> Path:
    """The 1024-px input the service makes from the first held-out photo."""
    from isnet_wsgi.model.segmenter import ModelInput

    image = fidelity.load_photo(photos(HELD_OUT_DIR)[0])
    tensor = ModelInput.from_manifest(manifest).tensor(image)
    path = folder / f"tensor-{manifest['sha256'][:12]}.npy"
    np.save(path, tensor)
    return path


def measure_in_turn(models: dict[str, tuple[Path, dict]], folder: Path, rounds: int = 3,
                    runs: int = 2) -> dict[str, dict]:
    """Peak RSS (max over children) and median run time per model, children in turn."""
    prepared = {}
    for index, (name, (path, manifest)) in enumerate(models.items()):
        manifest_path = folder / f"manifest-{index}.json"
        manifest_path.write_text(json.dumps(manifest))
        prepared[name] = (path, manifest_path, _service_tensor(manifest, folder))
    peaks, seconds = {name: [] for name in models}, {name: [] for name in models}
    for _ in range(rounds):
        for name, (path, manifest_path, tensor_path) in prepared.items():
            report = footprint.service_run(path, manifest_path, tensor_path, runs)
            peaks[name].append(report["peak_rss_mb"])
            seconds[name].extend(report["run_s"][1:])  # the first run warms up
    return {name: {"peak_rss_mb": max(peaks[name]), "median_s": round(statistics.median(seconds[name]), 3)}
            for name in models}


# The service's input and mask resizing as it was before issue 11 (BILINEAR,
# x/255), one step towards rembg's, and as it is now (rembg's exactly).
PREPROCESSING = {"bilinear, /255": {"resize": "BILINEAR", "divide_by": "255"},
                 "lanczos, /255": {"resize": "LANCZOS", "divide_by": "255"},
                 "lanczos, /max": {"resize": "LANCZOS", "divide_by": "image_max"}}


def resize_cost_ms(repeats: int = 15) -> dict[str, float]:
    """Median ms of the two resizes of one request (photo to 1024x1024, mask back) per filter,
    on the largest held-out photo."""
    import time

    from PIL import Image

    image = max((fidelity.load_photo(p) for p in photos(HELD_OUT_DIR)),
                key=lambda i: i.width * i.height)
    mask = Image.new("L", (INPUT_SIZE_PX,) * 2, 128)
    costs = {}
    for name, resample in (("bilinear", Image.Resampling.BILINEAR), ("lanczos", Image.Resampling.LANCZOS)):
        seconds = []
        for _ in range(repeats):
            started = time.perf_counter()
            image.resize(mask.size, resample)
            mask.resize(image.size, resample)
            seconds.append(time.perf_counter() - started)
        costs[name] = round(statistics.median(seconds) * 1000, 1)
    return {**costs, "photo_px": f"{image.width}x{image.height}"}


def score_both_filters(model_path: Path, manifest: dict | None) -> dict[str, dict]:
    """Held-out scores through the service's mask path with each PREPROCESSING."""
    import dataclasses

    pipeline = fidelity.service_pipeline(model_path, manifest)
    segmenter = pipeline.segmenter
    service_input = segmenter.input
    result = {}
    try:
        for name, fields in PREPROCESSING.items():
            segmenter.input = dataclasses.replace(service_input, **fields)
            rows = {p.name: fidelity.score(pipeline.mask(fidelity.load_photo(p)), fidelity.load_reference(p))
                    for p in photos(HELD_OUT_DIR)}
            result[name] = {"photos": rows, **fidelity.summary(rows)}
    finally:
        segmenter.input = service_input
    return result


def filter_comparison() -> dict:
    """The built int8 model and the fp32 model, each through the service's
    mask path with each PREPROCESSING: how much of the gap to rembg is the
    filters, the normalisation and the model."""
    fp32 = fp32_reference(source.npm_model(source.cache_dir()), source.cache_dir())
    models = {"int8 (built)": (MODEL_PATH, None), "fp32": (fp32, variant_manifest(fp32, None))}
    result = {f"{name}, {filters}": row for name, (path, manifest) in models.items()
              for filters, row in score_both_filters(path, manifest).items()}
    return {"variants": result, "resize_ms": resize_cost_ms()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.recipes", description=__doc__.splitlines()[0])
    parser.add_argument("recipes", nargs="*", help=f"names from: {', '.join(RECIPES)}")
    parser.add_argument("--filters", action="store_true",
                        help="compare the service's resize filters with rembg's instead")
    args = parser.parse_args(argv)
    if args.filters:
        result = filter_comparison()
        (source.cache_dir() / "filters-result.json").write_text(json.dumps(result, indent=1))
        for name, row in result["variants"].items():
            print(f"{name}: {json.dumps({k: v for k, v in row.items() if k != 'photos'})}")
        print(f"resize ms per request: {result['resize_ms']}")
        return 0
    cache = source.cache_dir()
    bench = explore.Workbench(fp32_reference(source.npm_model(cache), cache), cache)
    models = {BUILT: (MODEL_PATH, read_manifest())}
    for name in args.recipes or RECIPES:
        print(f"building: {name}", flush=True)
        models[name] = build_recipe(bench, name, RECIPES[name])
    scores = {}
    for name, (path, manifest) in models.items():
        scores[name] = score_both_filters(path, manifest)
        print(f"scored: {name}", flush=True)
    costs = measure_in_turn(models, cache)
    baseline = costs[BUILT]["median_s"]
    print("| recipe | resizes | IoU min | IoU median | MAE max | MAE median | photos on target | worst photo "
          "| peak RSS MB | time vs built |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in models:
        for filters, s in scores[name].items():
            c = costs[name]
            print(f"| {name} | {filters} | {s['iou_min']:.4f} | {s['iou_median']:.4f} | {s['mae_max']:.4f} "
                  f"| {s['mae_median']:.4f} | {s['on_target']}/{len(s['photos'])} | {s['worst_photo']} "
                  f"| {c['peak_rss_mb']} | {c['median_s'] / baseline:.2f}x |")
    (cache / "recipes-result.json").write_text(json.dumps({"scores": scores, "costs": costs}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
