"""Try quantisation recipes on the hard set: `python -m models.recipes [NAME ...]`.

Each recipe is built into the cache folder (never over models/), calibrated
on models/hardset/calibration/ only, and scored on the held-out photos with
models/fidelity.py (the service's own mask path against rembg's). Peak RSS
and bare inference time come from fresh child processes that create the
session as the service does (isnet_wsgi/model.py's Segmenter, the Makefile's
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

from models import build, calibrate, explore, fidelity, measure, quantize, source

BUILT = "built model (default)"


def hardset_images():
    return (fidelity.load_photo(photo) for photo in fidelity.photos(fidelity.CALIBRATION_DIR))


explore.CALIBRATION_SETS["hardset"] = (hardset_images, False)
DECODER_512 = ("/side1/", "/stage1d/")
# Recipes whose Resizes stay float up to this output side (px), uint8 above it.
FLOAT_RESIZE_MAX_SIDE_PX = {"hard-set, float Resizes up to 128 px, uint8 above": 128,
                            "hard-set, float Resizes up to 256 px, uint8 above": 256}
DEEP_STAGES = ("/stage4/", "/stage5/", "/stage6/", "/stage5d/", "/stage4d/", "/pool34/", "/pool45/", "/pool56/")
SIXTEEN_BIT = "hard-set, 16-bit activations, float Resizes"
RECIPES = {
    "default recipe, hard-set calibration": explore.Variant(quantize.Recipe(), "hardset"),
    "hard-set, float Resizes (no uint8 rewrite)": explore.Variant(quantize.Recipe(uint8_resize=False), "hardset"),
    "hard-set, stages 4-6 and 4d-5d fp32 too": explore.Variant(
        quantize.Recipe(fp32_prefixes=("/side1/",) + DEEP_STAGES, dynamic=False), "hardset"),
    SIXTEEN_BIT: explore.Variant(quantize.Recipe(uint8_resize=False), "hardset"),
    "hard-set, float Resizes up to 128 px, uint8 above": explore.Variant(quantize.Recipe(uint8_resize=False), "hardset"),
    "hard-set, float Resizes up to 256 px, uint8 above": explore.Variant(quantize.Recipe(uint8_resize=False), "hardset"),
    "hard-set, 90th percentile over samples": explore.Variant(quantize.Recipe(range_aggregate="p90"), "hardset"),
    "hard-set, median over samples": explore.Variant(quantize.Recipe(range_aggregate="median"), "hardset"),
    "hard-set, stage1d fp32 too": explore.Variant(quantize.Recipe(fp32_prefixes=DECODER_512), "hardset"),
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
    if name in FLOAT_RESIZE_MAX_SIDE_PX:
        _resize_in_uint8_above(out, FLOAT_RESIZE_MAX_SIDE_PX[name])
    return out, fidelity.variant_manifest(out, facts["input_quantisation"])


def _resize_in_uint8_above(path: Path, max_float_side_px: int) -> None:
    """quantize.resize_in_uint8 for the Resizes whose output side exceeds the
    limit only: the others are hidden from it under another op type meanwhile."""
    import onnx

    model = onnx.load(path)
    inferred = onnx.shape_inference.infer_shapes(model)
    sides = {v.name: v.type.tensor_type.shape.dim[-1].dim_value for v in inferred.graph.value_info}
    hidden = [n for n in model.graph.node
              if n.op_type == "Resize" and sides.get(n.output[0], 0) <= max_float_side_px]
    for node in hidden:
        node.op_type = "KeptFloatResize"
    quantize.resize_in_uint8(model)
    for node in model.graph.node:  # the rewrite rebuilt the node list: find them again
        if node.op_type == "KeptFloatResize":
            node.op_type = "Resize"
    onnx.save(model, path)


def _service_tensor(manifest: dict, folder: Path) -> Path:
    """The 1024-px input the service makes from the first held-out photo."""
    from isnet_wsgi.model import ModelInput

    image = fidelity.load_photo(fidelity.photos(fidelity.HELD_OUT_DIR)[0])
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
            report = measure.service_run(path, manifest_path, tensor_path, runs)
            peaks[name].append(report["peak_rss_mb"])
            seconds[name].extend(report["run_s"][1:])  # the first run warms up
    return {name: {"peak_rss_mb": max(peaks[name]), "median_s": round(statistics.median(seconds[name]), 3)}
            for name in models}


def lanczos_mask(pipeline, image, by_max: bool = False) -> "Image.Image":
    """Pipeline.mask with rembg's LANCZOS for both resizes instead of the service's
    BILINEAR; `by_max` also divides by the resized image's maximum, as rembg does
    (x/max - 0.5 is (x/255 - 0.5 m) / m with m = max/255: the same tensor code)."""
    import dataclasses

    from PIL import Image

    from isnet_wsgi.model import mask_from_output

    segmenter = pipeline.segmenter
    model_input = segmenter.input
    square = image.resize(model_input.size_px, Image.Resampling.LANCZOS)
    if by_max:
        brightest = max(int(np.asarray(square).max()), 1) / 255
        model_input = dataclasses.replace(
            model_input, mean=tuple(m * brightest for m in model_input.mean),
            std=tuple(s * brightest for s in model_input.std))
    mask = mask_from_output(segmenter.run(model_input.tensor(square)), model_input.size_px)
    return mask.resize(image.size, Image.Resampling.LANCZOS)


def resize_cost_ms(repeats: int = 15) -> dict[str, float]:
    """Median ms of the two resizes of one request (photo to 1024x1024, mask back) per filter,
    on the largest held-out photo."""
    import time

    from PIL import Image

    image = max((fidelity.load_photo(p) for p in fidelity.photos(fidelity.HELD_OUT_DIR)),
                key=lambda i: i.width * i.height)
    mask = Image.new("L", (calibrate.INPUT_SIZE_PX,) * 2, 128)
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
    """Held-out scores through the service's mask path as it is (BILINEAR), with
    LANCZOS, and with LANCZOS and rembg's divide-by-max."""
    pipeline = fidelity.service_pipeline(model_path, manifest)
    result = {}
    paths = {"bilinear": pipeline.mask, "lanczos": lambda i: lanczos_mask(pipeline, i),
             "lanczos, /max": lambda i: lanczos_mask(pipeline, i, by_max=True)}
    for filters, make in paths.items():
        rows = {p.name: fidelity.score(make(fidelity.load_photo(p)), fidelity.load_reference(p))
                for p in fidelity.photos(fidelity.HELD_OUT_DIR)}
        result[filters] = {"photos": rows, **fidelity.summary(rows)}
    return result


def filter_comparison() -> dict:
    """The built int8 model and the fp32 model, each through the service's
    mask path with its BILINEAR resizes and with LANCZOS ones: how much of
    the gap to rembg is the filters, the x/255 normalisation and the model."""
    fp32 = build.fp32_reference(source.npm_model(source.cache_dir()), source.cache_dir())
    models = {"int8 (built)": (build.MODEL_PATH, None), "fp32": (fp32, fidelity.variant_manifest(fp32, None))}
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
    bench = explore.Workbench(build.fp32_reference(source.npm_model(cache), cache), cache)
    models = {BUILT: (build.MODEL_PATH, build.read_manifest())}
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
