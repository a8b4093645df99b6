"""Quantisation of the fp32 ISNet graph: static uint8 QDQ, optionally plus dynamic.

Memory, not speed, is what this is for. At 1024 px the encoder's first stage
and the last decoder stage work on 512x512 maps with 32-64 channels; in fp32
each is 32-64 MB, and at the stage1d junction (`/Concat_9`) the skip tensors
from the encoder are still alive. Static QDQ quantisation stores activations
as uint8 (4x smaller) with ranges calibrated on real photos (ranges.py).

The issue's recipe quantised only that high-resolution part statically and
the remaining Convs dynamically (weights only). Measured here, dynamic
ConvInteger is the memory problem: it builds a full uint8 im2col buffer per
Conv (151 MB for stage2d's first Conv at 256x256) and keeps int32 and fp32
copies of each output. Quantising every stage statically removes that and
was also the most faithful (models/README.md has the table), so that is the
default: static everywhere except `/side1`, the 1-channel head that makes the
mask, which stays fp32 because it decides the edges.

Rewrites of the quantised graph (rewrites.py) then remove the last float
copies at 512x512 and make the fp32 head fast; this module folds the input's
QuantizeLinear out of the graph, so the caller feeds uint8. See
models/README.md for what each step measured.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper
from onnxruntime.quantization import (
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from models import ranges
from models.rewrites import head_as_taps, resize_in_uint8, split_head

# Nodes that run at 512x512 (input 1024 px): the stem, encoder stage 1, the
# decoder's last stage, and the junction where stage2d is upsampled and joined
# with stage 1's output. The issue's recipe quantised only these statically.
HIGH_RES_PREFIXES = ("/conv_in/", "/pool_in/", "/stage1/", "/stage1d/")
HIGH_RES_NODES = ("/Concat_9", "/Resize_4")
ALL_NODES = ("/",)  # every node name of the export starts with "/"
STATIC_OP_TYPES = ("Conv", "Relu", "Add", "Concat", "Resize", "MaxPool")
FP32_PREFIXES = ("/side1/",)


@dataclass(frozen=True)
class Recipe:
    """Everything that decides the quantised bytes, besides weights and photos."""

    static_prefixes: tuple[str, ...] = ALL_NODES
    static_nodes: tuple[str, ...] = ()
    static_op_types: tuple[str, ...] = STATIC_OP_TYPES
    fp32_prefixes: tuple[str, ...] = FP32_PREFIXES
    fp32_nodes: tuple[str, ...] = ()
    # The 90th percentile of the per-photo ranges: chosen on the calibration
    # photos' own scores among max, p90 and median (python -m models.trial,
    # models/README.md); the median was best on the 18 photos before the
    # `unsure` ones joined.
    range_aggregate: str = "p90"
    per_channel: bool = True
    # Weights in [-64, 64]. x86 CPUs without VNNI (AVX2 and AVX-512 alone)
    # multiply uint8 by int8 with an instruction that adds pairs of products
    # into int16 and saturates: with 8-bit weights the same file gave 3 of 23
    # held-out photos on target on an AVX2-only AMD EPYC (worst IoU 0.58)
    # where the Intel Xeon it was built on gave 9 (0.87). With 7-bit weights
    # no pair can pass 2 x 255 x 64 = 32640, which int16 holds.
    reduce_range: bool = True
    # "int8" (symmetric) or "uint8" (asymmetric, onnxruntime's U8U8 kernels:
    # 16-bit pair sums that cannot saturate, so 8 bits on every x86 CPU).
    weight_type: str = "int8"
    dynamic: bool = True
    uint8_resize: bool = True
    # Resizes whose output side is at most this stay float (0: none do); see resize_in_uint8.
    float_resize_max_side_px: int = 0
    head_parts: int = 4
    head_taps: bool = True
    uint8_input: bool = True
    extra_options: dict = field(default_factory=dict)

    def describe(self) -> dict:
        return {
            "static_uint8_qdq": {
                "node_prefixes": list(self.static_prefixes),
                "nodes": list(self.static_nodes),
                "op_types": list(self.static_op_types),
                "activations": "uint8 asymmetric",
                "weights": ("int8 symmetric" if self.weight_type == "int8" else "uint8 asymmetric")
                + (", 7-bit range" if self.reduce_range else "") + ", "
                + ("per-channel" if self.per_channel else "per-tensor"),
                "calibration": "min/max of each tensor inside the subject region (fp32 mask >= "
                f"{ranges.REGION_THRESHOLD}, dilated by {ranges.REGION_MARGIN:.4f} of the side), "
                f"{self.range_aggregate} over samples",
            },
            "dynamic_uint8_weights": "Convs outside the static part" if self.dynamic else "none",
            "kept_fp32": list(self.fp32_prefixes) + list(self.fp32_nodes),
            "bilinear_resize_on_uint8": self.uint8_resize,
            "float_resize_max_side_px": self.float_resize_max_side_px,
            "fp32_head_channel_groups": self.head_parts,
            "fp32_head_as_1x1_taps": self.head_taps,
            "uint8_input": self.uint8_input,
        }


def _matches(node: onnx.NodeProto, prefixes, names) -> bool:
    return node.name in names or node.name.startswith(tuple(prefixes))


def static_nodes(model: onnx.ModelProto, recipe: Recipe) -> list[str]:
    """Names of the nodes that get static QDQ quantisation."""
    return [
        node.name
        for node in model.graph.node
        if node.op_type in recipe.static_op_types
        and _matches(node, recipe.static_prefixes, recipe.static_nodes)
        and not _matches(node, recipe.fp32_prefixes, recipe.fp32_nodes)
    ]


def dynamic_nodes(model: onnx.ModelProto, recipe: Recipe) -> list[str]:
    """Names of the Convs that get dynamic (weight-only) quantisation."""
    if not recipe.dynamic:
        return []
    static = set(static_nodes(model, recipe))
    return [
        node.name
        for node in model.graph.node
        if node.op_type == "Conv"
        and node.name not in static
        and not _matches(node, recipe.fp32_prefixes, recipe.fp32_nodes)
    ]


def preprocess(fp32_path: Path, out_path: Path) -> None:
    """onnxruntime's pre-quantisation pass: shape inference and basic folding.

    NOTE: symbolic shape inference is skipped; it needs sympy, and ISNet's
    shapes are all static, so ONNX's own shape inference covers them.
    """
    quant_pre_process(str(fp32_path), str(out_path), skip_symbolic_shape=True)


def quantize(
    fp32_path: Path,
    out_path: Path,
    samples: Callable[[], Iterable[np.ndarray]],
    recipe: Recipe,
    per_sample: tuple[list[str], np.ndarray] | None = None,
) -> dict:
    """Pre-process, quantise the high-res part statically, the rest dynamically.

    `samples()` yields calibration inputs. `per_sample` (tensor names and
    their per-sample ranges from ranges.collect) skips the calibration runs;
    exploration uses it to try recipes on one collection. Returns facts for
    the manifest.
    """
    logging.getLogger().setLevel(logging.ERROR)  # the quantiser warns per tensor
    with tempfile.TemporaryDirectory(prefix="isnet-quant-") as tmp:
        pre, static = Path(tmp) / "pre.onnx", Path(tmp) / "static.onnx"
        preprocess(fp32_path, pre)
        model = onnx.load(pre)
        nodes, dynamic = static_nodes(model, recipe), dynamic_nodes(model, recipe)
        tensors = ranges.float_tensors(model, nodes)
        del model  # 176 MB of weights, not needed while calibrating
        if per_sample is None:
            per_sample = (tensors, ranges.collect(pre, tensors, samples()))
        table = _select(per_sample, tensors)
        cache = Path(tmp) / "ranges.json"
        ranges.write_cache(tensors, ranges.aggregate(table, recipe.range_aggregate), cache)
        quantize_static(
            str(pre),
            str(static),
            None,
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(recipe.static_op_types),
            nodes_to_quantize=nodes,
            per_channel=recipe.per_channel,
            reduce_range=recipe.reduce_range,
            activation_type=QuantType.QUInt8,
            weight_type={"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}[recipe.weight_type],
            calibrate_method=CalibrationMethod.MinMax,  # the label of our cache
            extra_options=dict(recipe.extra_options),
            calibration_cache_path=cache,
        )
        if dynamic:
            quantize_dynamic(
                str(static),
                str(out_path),
                op_types_to_quantize=["Conv"],
                nodes_to_quantize=dynamic,
                weight_type=QuantType.QUInt8,
            )
        else:
            shutil.copyfile(static, out_path)
    rewrites = _postprocess(out_path, recipe)
    return {"static_nodes": len(nodes), "dynamic_nodes": len(dynamic), **rewrites,
            "calibrated_tensors": len(tensors), "calibration_samples": int(table.shape[0])}


def _select(per_sample: tuple[list[str], np.ndarray], tensors: list[str]) -> np.ndarray:
    """The columns of a per-sample range table for `tensors`, in that order."""
    names, table = per_sample
    index = {name: i for i, name in enumerate(names)}
    missing = [name for name in tensors if name not in index]
    if missing:
        raise ValueError(f"no calibration ranges for {len(missing)} tensors, e.g. {missing[0]}")
    return table[:, [index[name] for name in tensors], :]


def fold_input_quantisation(model: onnx.ModelProto) -> dict | None:
    """Make the graph take the uint8 tensor its first QuantizeLinear made.

    The static graph starts input (float32) -> QuantizeLinear -> uint8. The
    caller holds its input for the whole run, so a float32 input is a 12 MB
    array alive at the peak where a uint8 one is 3 MB; and the caller can
    make the uint8 tensor straight from 8-bit pixels with a 256-entry table.
    Returns the scale and zero point the caller must quantise with, or None
    (and changes nothing) if the graph does not start that way.
    """
    graph = model.graph
    graph_input = graph.input[0]
    weights = {t.name: t for t in graph.initializer}
    quantise = next((n for n in graph.node if n.op_type == "QuantizeLinear"
                     and n.input[0] == graph_input.name), None)
    if quantise is None or any(name not in weights for name in quantise.input[1:3]):
        return None
    scale = numpy_helper.to_array(weights[quantise.input[1]])
    zero_point = numpy_helper.to_array(weights[quantise.input[2]])
    if scale.size != 1 or zero_point.dtype != np.uint8:
        return None
    for node in graph.node:
        for index, name in enumerate(node.input):
            if name == quantise.output[0]:
                node.input[index] = graph_input.name
    graph.node.remove(quantise)
    graph_input.type.tensor_type.elem_type = onnx.TensorProto.UINT8
    return {"scale": float(scale.reshape(())), "zero_point": int(zero_point.reshape(()))}


def input_quantisation(model: onnx.ModelProto) -> tuple[float, int] | None:
    """(scale, zero point) a caller quantises with when the graph input is
    uint8 (read from the DequantizeLinear that consumes it), else None."""
    dequantise = _input_dequantise(model)
    if dequantise is None:
        return None
    weights = {t.name: t for t in model.graph.initializer}
    scale, zero_point = (numpy_helper.to_array(weights[name]) for name in dequantise.input[1:3])
    return float(scale.reshape(())), int(zero_point.reshape(()))


def unfold_input_quantisation(model: onnx.ModelProto) -> bool:
    """The inverse of fold_input_quantisation: the graph takes float32 again
    and quantises it with a QuantizeLinear of the same scale and zero point.

    For callers that feed x/255 - mean as float32 (rembg in the bench): the
    same weights, and the same uint8 tensor after the first node. Returns
    False (and changes nothing) if the graph input is not uint8.
    """
    dequantise = _input_dequantise(model)
    if dequantise is None:
        return False
    graph_input = model.graph.input[0]
    quantised = graph_input.name + "_QuantizeLinear_Output"
    for node in model.graph.node:
        for index, name in enumerate(node.input):
            if name == graph_input.name:
                node.input[index] = quantised
    model.graph.node.insert(0, helper.make_node(
        "QuantizeLinear", [graph_input.name, *dequantise.input[1:3]], [quantised],
        name=graph_input.name + "_QuantizeLinear"))
    graph_input.type.tensor_type.elem_type = onnx.TensorProto.FLOAT
    return True


def _input_dequantise(model: onnx.ModelProto) -> onnx.NodeProto | None:
    """The DequantizeLinear that reads a uint8 graph input, if the input is uint8."""
    graph_input = model.graph.input[0]
    if graph_input.type.tensor_type.elem_type != onnx.TensorProto.UINT8:
        return None
    return next(n for n in model.graph.node
                if n.op_type == "DequantizeLinear" and n.input[0] == graph_input.name)


def _drop_unused_initializers(model: onnx.ModelProto) -> None:
    used = {name for node in model.graph.node for name in node.input}
    unused = [t for t in model.graph.initializer if t.name not in used]
    for tensor in unused:
        model.graph.initializer.remove(tensor)


def _postprocess(path: Path, recipe: Recipe) -> dict:
    """Graph rewrites after quantisation, and fixed metadata; returns what
    they changed, for the manifest."""
    model = onnx.load(path)
    resized = resize_in_uint8(model, recipe.float_resize_max_side_px) if recipe.uint8_resize else 0
    if recipe.head_parts > 1:
        for prefix in recipe.fp32_prefixes:
            split_head(model, f"{prefix}Conv", recipe.head_parts)
    if recipe.head_taps:
        for prefix in recipe.fp32_prefixes:
            head_as_taps(model, prefix)
    input_quantisation = fold_input_quantisation(model) if recipe.uint8_input else None
    _drop_unused_initializers(model)  # e.g. the head's weight, now in groups
    _normalise_metadata(model)
    onnx.save(model, path)
    return {"uint8_resizes": resized, "input_quantisation": input_quantisation}


def _normalise_metadata(model: onnx.ModelProto) -> None:
    """Fix the fields that would otherwise name the tool versions that ran."""
    model.producer_name = "isnet-wsgi models.build"
    model.producer_version = ""
    del model.metadata_props[:]
