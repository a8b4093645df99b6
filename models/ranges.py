"""Activation ranges for static quantisation, collected per sample and aggregated.

Why not onnxruntime's calibrators: MinMax takes the global extreme, and ISNet's
decoder makes huge activations (hundreds, against ~10 on ordinary photos)
wherever a large high-frequency texture fills the background, such as grass or
gravel. One such sample stretches the range 50-fold and costs every ordinary
photo its precision (mask IoU fell to 0.72). Clipping those values is
harmless, as they only say "background" louder: they sit far from the
subject (measured: max 6-8 within the subject and a margin around it, 150-800
outside, on the same photos). So each tensor's range is measured only inside
the *subject region*: the fp32 model's own mask, dilated by a margin so the
edges and the background next to them count. Per sample we keep min and max;
the set's range is their extreme (or a percentile over samples). The
histogram calibrators (entropy, percentile) would need every activation of
the model in memory at once, gigabytes at 1024 px, and still see the
background outliers.

Ranges are rounded to 3 significant digits before they become scales: the
last bits of a float convolution may differ between CPUs (AVX2 vs AVX-512
kernels), and rounding keeps the quantised bytes identical across machines.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper
from onnxruntime.quantization.calibrate import (
    CalibrationMethod,
    TensorData,
    TensorsData,
    save_tensors_data,
)

SIGNIFICANT_DIGITS = 3


def float_tensors(model: onnx.ModelProto, node_names: Iterable[str]) -> list[str]:
    """Non-constant float tensors read or written by the named nodes, sorted."""
    wanted = set(node_names)
    inferred = onnx.shape_inference.infer_shapes(model)
    graph = inferred.graph
    float_names = {
        value.name
        for value in (*graph.input, *graph.output, *graph.value_info)
        if value.type.tensor_type.elem_type == TensorProto.FLOAT
    }
    constants = {t.name for t in graph.initializer}
    names = set()
    for node in graph.node:
        if node.name in wanted:
            names.update(n for n in (*node.input, *node.output) if n in float_names)
    return sorted(names - constants)


# Subject = the fp32 model's probability (not min-max normalised: a photo
# without a subject must give an empty region, not amplified noise).
REGION_THRESHOLD = 0.05
REGION_MARGIN = 1 / 16  # dilation, as a fraction of the image side


def _region_input(side_px: int) -> str:
    return f"calibration_region_{side_px}"


def _with_reductions(model: onnx.ModelProto, tensors: list[str]) -> tuple[onnx.ModelProto, list[int]]:
    """A copy of `model` whose outputs are ReduceMin/ReduceMax of each tensor
    times a 0/1 region mask of its resolution, in the order of `tensors`.
    Returns the model and the region sides (px) it takes as extra inputs.

    NOTE: each tensor's reductions follow its producer in the node list,
    and the model's own output is dropped, so that a session that runs
    nodes in index order (collect's) frees each activation once its last
    reader has run, as a plain inference does.
    """
    inferred = onnx.shape_inference.infer_shapes(model)
    graph = inferred.graph
    sides = {}
    for value in (*graph.input, *graph.value_info):
        dims = [d.dim_value for d in value.type.tensor_type.shape.dim]
        if len(dims) == 4 and dims[2] == dims[3] and dims[2] > 0:
            sides[value.name] = dims[2]
    missing = [name for name in tensors if name not in sides]
    if missing:
        raise ValueError(f"no square NCHW shape known for {missing[0]}")
    needed = sorted({sides[name] for name in tensors})
    for side in needed:
        graph.input.append(helper.make_tensor_value_info(_region_input(side), TensorProto.FLOAT, [1, 1, side, side]))
    del graph.output[:]
    reductions: dict[str, list[onnx.NodeProto]] = {}
    for index, name in enumerate(tensors):
        masked = f"range_{index}_masked"
        reductions[name] = [helper.make_node("Mul", [name, _region_input(sides[name])], [masked], name=masked)]
        for op in ("ReduceMin", "ReduceMax"):
            out = f"range_{index}_{op}"
            reductions[name].append(helper.make_node(op, [masked], [out], keepdims=0, name=out))
            graph.output.append(helper.make_tensor_value_info(out, TensorProto.FLOAT, []))
    nodes = [node for name in tensors if name in {i.name for i in graph.input} for node in reductions.pop(name)]
    for node in graph.node:
        nodes.append(node)
        nodes.extend(added for out in node.output for added in reductions.pop(out, []))
    del graph.node[:]
    graph.node.extend(nodes)
    return inferred, needed


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation by a square, done as two separable 1-D max filters."""
    from numpy.lib.stride_tricks import sliding_window_view

    size = 2 * radius + 1
    rows = sliding_window_view(np.pad(mask, ((0, 0), (radius, radius))), size, axis=1).max(axis=2)
    return sliding_window_view(np.pad(rows, ((radius, radius), (0, 0))), size, axis=0).max(axis=2)


def subject_regions(probability: np.ndarray, sides: list[int]) -> dict[str, np.ndarray]:
    """0/1 region inputs, one per side: the dilated subject, max-pooled to each side."""
    full = probability.shape[0]
    region = _dilate(probability >= REGION_THRESHOLD, round(full * REGION_MARGIN)).astype(np.float32)
    regions = {}
    for side in sides:
        factor = full // side
        pooled = region.reshape(side, factor, side, factor).max(axis=(1, 3)) if factor > 1 else region
        regions[_region_input(side)] = pooled[None, None]
    return regions


def collect(
    model_path: Path, tensors: list[str], samples: Iterable[np.ndarray], threads: int = 2, whole_image: bool = False
) -> np.ndarray:
    """Per-sample ranges inside the subject region: array (samples, tensors, 2).

    Two runs per sample: the plain model's mask defines the region, then the
    augmented model measures each tensor inside it. `whole_image` measures
    everywhere instead (plain MinMax; for comparison only).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    options.enable_cpu_mem_arena = False  # memory goes back as tensors are freed
    plain = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    model, sides = _with_reductions(onnx.load(model_path), tensors)
    serialized = model.SerializeToString()
    del model  # the session keeps its own copy of the weights
    # PERF: onnxruntime's default order is a depth-first walk back from the
    # graph's leaves, which ran the whole network before any reduction: every
    # activation alive at once, 2.8 GB for one photo, 7.2 GB for the build
    # with the arena on. In index order (PRIORITY_BASED) the reductions run
    # as their tensors are made: 1.2 GB. Basic optimisations only: the
    # blocked-layout rewrites of the full level add nodes out of that order
    # (and change only the last bits: ranges are rounded to 3 digits).
    options.execution_order = ort.ExecutionOrder.PRIORITY_BASED
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    augmented = ort.InferenceSession(serialized, options, providers=["CPUExecutionProvider"])
    del serialized
    input_name = plain.get_inputs()[0].name
    rows = []
    for batch in samples:
        if whole_image:
            probability = np.ones(batch.shape[2:], np.float32)
        else:
            probability = plain.run(None, {input_name: batch})[0][0, 0]
        feeds = {input_name: batch, **subject_regions(probability, sides)}
        values = augmented.run(None, feeds)
        rows.append(np.asarray(values, dtype=np.float32).reshape(len(tensors), 2))
    return np.stack(rows)


def _round_sig(values: np.ndarray, digits: int = SIGNIFICANT_DIGITS) -> np.ndarray:
    """Round away from zero to `digits` significant digits (never shrinks a range)."""
    out = np.zeros_like(values, dtype=np.float64)
    nonzero = values != 0
    exponent = np.floor(np.log10(np.abs(values[nonzero]))) - (digits - 1)
    scale = 10.0 ** exponent
    out[nonzero] = np.sign(values[nonzero]) * np.ceil(np.abs(values[nonzero]) / scale) * scale
    return out.astype(np.float32)


def aggregate(per_sample: np.ndarray, method: str) -> np.ndarray:
    """(tensors, 2) ranges from (samples, tensors, 2), rounded for portability.

    `method` is "max" (plain MinMax), "median", or "pNN": the NNth percentile
    over samples of each sample's max (and the (100-NN)th of its min).
    """
    lows, highs = per_sample[..., 0], per_sample[..., 1]
    if method == "max":
        q = 100.0
    elif method == "median":
        q = 50.0
    elif method.startswith("p") and method[1:].isdigit() and 0 <= int(method[1:]) <= 100:
        q = float(method[1:])
    else:
        raise ValueError(f"unknown aggregate {method!r}: use max, median or pNN")
    low = np.percentile(lows, 100.0 - q, axis=0)
    high = np.percentile(highs, q, axis=0)
    low, high = np.minimum(low, 0.0), np.maximum(high, 0.0)  # zero must be representable
    return np.stack([_round_sig(low), _round_sig(high)], axis=1)


def write_cache(tensors: list[str], ranges: np.ndarray, path: Path) -> None:
    """Save ranges in onnxruntime's calibration-cache format (read by quantize_static)."""
    data = {
        name: TensorData(lowest=np.array(low, np.float32), highest=np.array(high, np.float32))
        for name, (low, high) in zip(tensors, ranges)
    }
    save_tensors_data(TensorsData(CalibrationMethod.MinMax, data), path)


def describe(tensors: list[str], ranges: np.ndarray) -> str:
    """The ranges as stable JSON text, for hashing into the cache key."""
    return json.dumps({name: [float(a), float(b)] for name, (a, b) in zip(tensors, ranges)}, sort_keys=True)
