"""Score recipes on the calibration photos only: `python -m models.trial [NAME ...]`.

The choice of a recipe is made here, on the photos the build calibrates on,
so that the held-out photos stay a measurement (`--held-out` scores the
named recipes there too, once chosen). Each recipe is quantised from one
collection of calibration ranges (cached by the photos' and ranges.py's
digests), its masks made by the service's own path (fidelity.service_pipeline)
and compared with the fp32 model's masks made the same way (reference.py).
A recipe fitted on photos (gptq.py, biascorrect.py) fits on half of them
(fitting_photos) and is judged on the other half: each recipe's second row,
"calibration, not fitted on". Not part of `make test`: about a minute a
recipe on 2 cores, plus the one collection (two runs per photo).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper
from onnxruntime.quantization import QuantType

from models import (
    biascorrect,
    calibrate,
    equalise,
    fidelity,
    gptq,
    quantize,
    ranges,
    reference,
    rounding,
    source,
)
from models.fp32 import fp32_model_path
from models.manifest import (
    HELD_OUT_DIR,
    MODELS_DIR,
    calibration_digests,
    calibration_photos,
    photos,
    variant_manifest,
)

RECIPES = {
    "shipped": quantize.Recipe(),
    "8-bit int8 weights (saturates without VNNI)": quantize.Recipe(reduce_range=False),
    "8-bit uint8 weights (U8U8)": quantize.Recipe(reduce_range=False, weight_type="uint8"),
    "7-bit uint8 weights": quantize.Recipe(weight_type="uint8"),
    "max over photos": quantize.Recipe(range_aggregate="max"),
    "90th percentile over photos": quantize.Recipe(range_aggregate="p90"),
}
# The shipped recipe with each weight channel's scale chosen by its rounding
# error (rounding.py), the range clipped to no less than this of max|w|.
WEIGHT_CLIPPING = {f"weight ranges clipped to >= {floor} of max|w|": floor for floor in (0.3, 0.5, 0.7, 0.8)}
# The shipped recipe with these stages left float, their Convs on 8-bit
# weights (int8_weights). Over the memory and time limits: onnxruntime folds
# the weights into fp32 at session start (models/README.md, the frontier).
FLOAT_STAGES = {
    "stage 6 float, 8-bit weights": ("/stage6/",),
    "stages 5, 6, 5d float, 8-bit weights": ("/stage5/", "/stage6/", "/stage5d/"),
    "stages 4, 5, 6, 5d, 4d float, 8-bit weights": ("/stage4/", "/stage5/", "/stage6/", "/stage5d/", "/stage4d/"),
}
# The shipped recipe on an fp32 graph whose RSU Concats get equal ranges
# (equalise.py), calibrated afresh.
EQUALISED = "Concat branches equalised"
# The shipped recipe with each Conv's integers chosen for its output on the
# calibration photos (gptq.py): same scales, range and graph.
# `sequential`: each Conv rounded on the inputs the quantised graph gives
# it, towards the fp32 Conv's output.
INPUT_ROUNDED = {"weights rounded by their inputs (GPTQ)": False,
                 "weights rounded by their inputs, sequential, to fp32 outputs": True}
# The shipped recipe with the activations inside these stages (those no
# later stage reads: a Resize takes no uint16) as uint16, through
# onnxruntime's TensorQuantOverrides; their Convs then run in float.
UINT16_STAGES = {"stage 6 activations uint16": ("/stage6/",)}
ALL = [*RECIPES, *FLOAT_STAGES, *WEIGHT_CLIPPING, EQUALISED, *INPUT_ROUNDED, *UINT16_STAGES]

# Per-stage sensitivity (--stages): one group of nodes quantised, the rest fp32.
STAGES = {
    "stem + stage1 (512 px)": ("/conv_in/", "/pool_in/", "/stage1/"),
    "stage2 (256)": ("/stage2/", "/pool12/"), "stage3 (128)": ("/stage3/", "/pool23/"),
    "stage4 (64)": ("/stage4/", "/pool34/"), "stage5 (32)": ("/stage5/", "/pool45/"),
    "stage6 (16)": ("/stage6/", "/pool56/"), "stage5d (32)": ("/stage5d/",), "stage4d (64)": ("/stage4d/",),
    "stage3d (128)": ("/stage3d/",), "stage2d (256)": ("/stage2d/",), "stage1d (512)": ("/stage1d/",),
    "junctions (Concat, Resize)": ("/Concat", "/Resize"),
}


def int8_weights(model: onnx.ModelProto, prefixes: tuple[str, ...]) -> int:
    """Store the fp32 weights of the Convs named under `prefixes` as 8-bit
    int8, per output channel (symmetric, [-127, 127]), behind a
    DequantizeLinear: the Conv itself stays float, so no CPU's integer
    kernel can saturate on the full 8 bits. Returns how many were stored."""
    graph = model.graph
    weights = {t.name: t for t in graph.initializer}
    stored = 0
    for node in list(graph.node):
        weight = weights.get(node.input[1]) if node.op_type == "Conv" else None
        if weight is None or not node.name.startswith(prefixes) or weight.data_type != onnx.TensorProto.FLOAT:
            continue
        values = numpy_helper.to_array(weight)
        scale = np.abs(values).reshape(len(values), -1).max(axis=1) / 127
        scale = np.where(scale > 0, scale, 1).astype(np.float32)
        integers = np.clip(np.rint(values / scale.reshape(-1, 1, 1, 1)), -127, 127).astype(np.int8)
        names = [f"{weight.name}_int8", f"{weight.name}_int8_scale", f"{weight.name}_int8_zero"]
        graph.initializer.extend([numpy_helper.from_array(integers, names[0]),
                                  numpy_helper.from_array(scale, names[1]),
                                  numpy_helper.from_array(np.zeros(len(values), np.int8), names[2])])
        graph.initializer.remove(weight)
        dequantised = f"{weight.name}_int8_dequantised"
        graph.node.insert(list(graph.node).index(node), helper.make_node(
            "DequantizeLinear", names, [dequantised], name=f"{node.name}_weight_dequantise", axis=0))
        node.input[1] = dequantised
        stored += 1
    return stored


def build(name: str, out: Path, folder: Path, per_sample: tuple[list[str], np.ndarray],
          fitting_half: int = 0) -> dict:
    """The named recipe (one of ALL) quantised to `out`; its facts. A fitted
    recipe fits on fitting_photos(fitting_half)."""
    if name in RECIPES:
        return quantize.quantize(fp32_model_path(), out, lambda: iter(()), RECIPES[name], per_sample)
    pre = onnx.load(folder / "trial-pre.onnx")
    if name in UINT16_STAGES:
        overrides = {tensor: [{"quant_type": QuantType.QUInt16}]
                     for tensor in inner_tensors(pre, UINT16_STAGES[name])}
        recipe = quantize.Recipe(extra_options={"TensorQuantOverrides": overrides})
        return quantize.quantize(fp32_model_path(), out, lambda: iter(()), recipe, per_sample)
    if name in INPUT_ROUNDED:
        facts = quantize.quantize(fp32_model_path(), out, lambda: iter(()), quantize.Recipe(), per_sample)
        model = onnx.load(out)
        gptq.requantise(model, pre, calibrate.calibration_inputs(fitting_photos(fitting_half)),
                         sequential=INPUT_ROUNDED[name])
        onnx.save(model, out)
        return facts
    if name == EQUALISED:
        tensors, table = per_sample
        highs = dict(zip(tensors, ranges.aggregate(table, quantize.Recipe().range_aggregate)[:, 1]))
        for change in equalise.equalise_concats(pre, highs):
            print(f"  {change['concat']}: {change['conv']} x {change['factor']}", flush=True)
        equalised = folder / "trial-pre-equalised.onnx"
        onnx.save(pre, equalised)
        return quantize.quantize(equalised, out, calibrate.calibration_inputs, quantize.Recipe())
    prefixes = FLOAT_STAGES.get(name, ())
    recipe = quantize.Recipe(fp32_nodes=tuple(n.name for n in pre.graph.node if n.name.startswith(prefixes)))
    facts = quantize.quantize(fp32_model_path(), out, lambda: iter(()), recipe, per_sample)
    model = onnx.load(out)
    if name in FLOAT_STAGES:
        int8_weights(model, prefixes)
    else:
        rounding.rescale_weights(model, pre, WEIGHT_CLIPPING[name])
    onnx.save(model, out)
    return facts


def inner_tensors(model: onnx.ModelProto, prefixes: tuple[str, ...]) -> list[str]:
    """The calibrated tensors that nodes under `prefixes` make and only such nodes read."""
    readers: dict[str, list[str]] = {}
    for node in model.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node.name)
    inside = [node.name for node in model.graph.node if node.name.startswith(prefixes)]
    made = {name for node in model.graph.node if node.name.startswith(prefixes) for name in node.output}
    return [tensor for tensor in ranges.float_tensors(model, inside)
            if tensor in made and all(reader.startswith(prefixes) for reader in readers.get(tensor, []))]


def fitting_photos(half: int = 0) -> list[Path]:
    """The calibration photos a fitted recipe (gptq.py, biascorrect.py) fits
    on: every other one, from the first (half 0) or the second (half 1). The
    other half judges it: a fit scores well on its own photos (GPTQ fitted
    on all 20: MAE better on 19 of them, and on 13 of 26 held-out photos,
    worse on 12)."""
    return calibration_photos()[half::2]


def collection(folder: Path) -> tuple[list[str], np.ndarray]:
    """Every static tensor's per-photo ranges on the calibration photos."""
    pre = folder / "trial-pre.onnx"
    if not pre.is_file():
        quantize.preprocess(fp32_model_path(), pre)
    model = onnx.load(pre)
    tensors = ranges.float_tensors(model, quantize.static_nodes(model, quantize.Recipe()))
    del model
    key = hashlib.sha256(json.dumps([calibration_digests(), source.sha256_file(MODELS_DIR / "ranges.py"),
                                     tensors]).encode()).hexdigest()[:16]
    cached = folder / f"trial-ranges-{key}.npy"
    if not cached.is_file():
        np.save(cached, ranges.collect(pre, tensors, calibrate.calibration_inputs()))
    return tensors, np.load(cached)


def fp32_masks(photos: list[Path]) -> dict[str, object]:
    session = reference.fp32_session()
    return {photo.name: reference.reference_mask(session, fidelity.load_photo(photo)) for photo in photos}


def score(model_path: Path, manifest: dict, photos: list[Path], wanted: dict) -> dict:
    pipeline = fidelity.service_pipeline(model_path, manifest)
    rows = {photo.name: fidelity.score(pipeline.mask(fidelity.load_photo(photo)), wanted[photo.name])
            for photo in photos}
    return {"photos": rows, **fidelity.summary(rows)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.trial", description=__doc__.splitlines()[0])
    parser.add_argument("recipes", nargs="*", help=f"names from: {', '.join(ALL)}"
                                                      " (default: RECIPES)")
    parser.add_argument("--held-out", action="store_true", help="score on the held-out photos as well")
    parser.add_argument("--bias-correction", action="store_true",
                        help="also score each recipe with its biases corrected (biascorrect.py) on "
                             "every other calibration photo")
    parser.add_argument("--fitting-half", type=int, choices=(0, 1), default=0,
                        help="which half of the calibration photos a fitted recipe fits on (the other judges it)")
    parser.add_argument("--stages", action="store_true",
                        help="rank stages instead: each alone quantised, on every other calibration photo")
    args = parser.parse_args(argv)
    folder = source.cache_dir()
    per_sample = collection(folder)
    if args.stages:
        return rank_stages(folder, per_sample)
    sets = {"calibration": calibration_photos()}
    if args.held_out:
        sets["held-out"] = photos(HELD_OUT_DIR)
    wanted = {name: fp32_masks(group) if name == "calibration" else
              {photo.name: fidelity.load_reference(photo) for photo in group} for name, group in sets.items()}
    fitted = {photo.name for photo in fitting_photos(args.fitting_half)}
    unfitted = {photo.name for photo in calibration_photos()} - fitted
    results = {}
    for name in args.recipes or RECIPES:
        out = folder / f"trial-{ALL.index(name)}.onnx"
        facts = build(name, out, folder, per_sample, args.fitting_half)
        variants = {name: out}
        if args.bias_correction:
            corrected = out.with_name(f"{out.stem}-bias-corrected.onnx")
            biascorrect.corrected_copy(out, corrected, folder / "trial-pre.onnx",
                                       lambda: calibrate.calibration_inputs(fitting_photos(args.fitting_half)))
            variants[f"{name}, biases corrected"] = corrected
        for label, path in variants.items():
            manifest = variant_manifest(path, facts["input_quantisation"])
            results[label] = {"sha256": manifest["sha256"], **{
                set_name: score(path, manifest, group, wanted[set_name]) for set_name, group in sets.items()}}
            judged = {photo: row for photo, row in results[label]["calibration"]["photos"].items()
                      if photo in unfitted}
            results[label]["calibration, not fitted on"] = {"photos": judged, **fidelity.summary(judged)}
            for set_name in ("calibration", "calibration, not fitted on", *(n for n in sets if n != "calibration")):
                s = results[label][set_name]
                print(f"| {label} | {set_name} | {s['iou_min']:.4f} | {s['iou_median']:.4f} | {s['mae_max']:.4f} "
                      f"| {s['mae_median']:.4f} | {s['on_target']}/{len(s['photos'])} | {s['worst_photo']} |",
                      flush=True)
    (folder / "trial-result.json").write_text(json.dumps(results, indent=1))
    return 0


def rank_stages(folder: Path, per_sample: tuple[list[str], np.ndarray]) -> int:
    """Mean IoU and MAE against fp32 with one stage quantised (shipped
    rules, p90 ranges), the rest fp32: the stages that cost most first."""
    photos_used = calibration_photos()[::2]
    wanted = fp32_masks(photos_used)
    out, rows = folder / "trial-stage.onnx", {}
    for name, prefixes in STAGES.items():
        recipe = quantize.Recipe(static_prefixes=prefixes, dynamic=False)
        facts = quantize.quantize(fp32_model_path(), out, lambda: iter(()), recipe, per_sample)
        result = score(out, variant_manifest(out, facts["input_quantisation"]), photos_used, wanted)
        rows[name] = {"iou_mean": round(float(np.mean([r["iou"] for r in result["photos"].values()])), 4),
                      "mae_mean": round(float(np.mean([r["mae"] for r in result["photos"].values()])), 5),
                      "iou_min": result["iou_min"], "mae_max": result["mae_max"]}
    for name, row in sorted(rows.items(), key=lambda item: item[1]["mae_mean"], reverse=True):
        print(f"| {name} | {row['iou_mean']:.4f} | {row['iou_min']:.4f} | {row['mae_mean']:.5f} | {row['mae_max']:.4f} |")
    (folder / "trial-stages.json").write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
