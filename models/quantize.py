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

Two rewrites of the quantised graph then remove the last float copies at
512x512: bilinear Resizes run on uint8 (resize_in_uint8), and the fp32 head
reads its input in four channel groups (split_head). A third makes the head
fast without onnxruntime's blocked layout: each group's 3x3 Conv becomes a
1x1 Conv to tap planes, summed shifted (head_as_taps). See models/README.md
for what each step measured.
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
    # Median of the per-photo ranges: chosen on the calibration photos' own
    # scores among max, p90 and median (models/README.md).
    range_aggregate: str = "median"
    per_channel: bool = True
    # Weights in [-64, 64]. x86 CPUs without VNNI (AVX2 and AVX-512 alone)
    # multiply uint8 by int8 with an instruction that adds pairs of products
    # into int16 and saturates: with 8-bit weights the same file gave 3 of 23
    # held-out photos on target on an AVX2-only AMD EPYC (worst IoU 0.58)
    # where the Intel Xeon it was built on gave 9 (0.87). With 7-bit weights
    # no pair can pass 2 x 255 x 64 = 32640, which int16 holds.
    reduce_range: bool = True
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
                "weights": "int8 symmetric" + (", 7-bit range" if self.reduce_range else "") + ", "
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
        nodes = static_nodes(model, recipe)
        tensors = ranges.float_tensors(model, nodes)
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
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,  # the label of our cache
            extra_options=dict(recipe.extra_options),
            calibration_cache_path=cache,
        )
        dynamic = dynamic_nodes(model, recipe)
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


def resize_in_uint8(model: onnx.ModelProto, float_max_side_px: int = 0) -> int:
    """Turn DequantizeLinear -> Resize -> QuantizeLinear (same scale and zero
    point) into a Resize on the uint8 tensor; returns how many were changed.

    onnxruntime drops such a pair itself only for nearest-neighbour Resize;
    ISNet's bilinear upsamples stay in fp32 between the two, and the one to
    512x512 (`/Resize_4`, 64 channels) is then a 64 MB float tensor where the
    peak sits. A bilinear Resize on uint8 rounds to the nearest step, which is
    the same value QuantizeLinear would produce up to one step.

    Resizes whose output side is at most `float_max_side_px` are left float,
    an option measured for issue 11: their rounding error is upsampled by
    every later stage, but with the hard-set calibration keeping those up to
    64 or 128 px float gained one held-out photo on target (8 -> 9 of 23)
    for +6 and +15 MB of peak (models/README.md), so the build keeps none.
    """
    sides = _output_sides(model) if float_max_side_px else {}
    graph = model.graph
    producers = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    removed, changed = set(), 0
    for node in graph.node:
        if node.op_type != "Resize" or 0 < sides.get(node.output[0], 0) <= float_max_side_px:
            continue
        dq, qs = producers.get(node.input[0]), consumers.get(node.output[0], [])
        if dq is None or dq.op_type != "DequantizeLinear" or len(qs) != 1 or qs[0].op_type != "QuantizeLinear":
            continue
        if list(dq.input[1:]) != list(qs[0].input[1:]) or len(consumers[dq.output[0]]) != 1:
            continue
        node.input[0], node.output[0] = dq.input[0], qs[0].output[0]
        removed.update((id(dq), id(qs[0])))
        changed += 1
    kept = [node for node in graph.node if id(node) not in removed]
    del graph.node[:]
    graph.node.extend(kept)
    return changed


def _output_sides(model: onnx.ModelProto) -> dict[str, int]:
    """The last dimension (width) of every tensor ONNX shape inference can size."""
    inferred = onnx.shape_inference.infer_shapes(model)
    return {v.name: v.type.tensor_type.shape.dim[-1].dim_value for v in inferred.graph.value_info}


def split_head(model: onnx.ModelProto, conv_name: str, parts: int) -> bool:
    """Run an fp32 Conv that reads a dequantised tensor in channel groups.

    `/side1` stays fp32, so its 64-channel 512x512 input is dequantised to a
    64 MB float tensor, and onnxruntime copies it once more into its blocked
    (NCHWc) layout: 128 MB at once, the peak of the whole run. Split along
    channels while still uint8, each group is dequantised and convolved on
    its own (16 MB + 16 MB for 4 groups) and the partial sums are added, with
    the bias once. Returns False (and changes nothing) if the pattern is absent.
    """
    graph = model.graph
    producers = {out: node for node in graph.node for out in node.output}
    weights = {t.name: t for t in graph.initializer}
    conv = next((n for n in graph.node if n.name == conv_name and n.op_type == "Conv"), None)
    dq = producers.get(conv.input[0]) if conv is not None else None
    if dq is None or dq.op_type != "DequantizeLinear" or conv.input[1] not in weights:
        return False
    weight = numpy_helper.to_array(weights[conv.input[1]])
    if weight.shape[1] % parts or numpy_helper.to_array(weights[dq.input[1]]).size != 1:
        return False
    group = weight.shape[1] // parts
    prefix = conv_name.rsplit("/", 1)[0]
    new_nodes = [helper.make_node("Split", [dq.input[0], _add_int64(graph, f"{prefix}/split_sizes", [group] * parts)],
                                  [f"{prefix}/part{i}_q" for i in range(parts)], axis=1, name=f"{prefix}/Split")]
    partials = []
    for i in range(parts):
        w = numpy_helper.from_array(weight[:, i * group:(i + 1) * group].copy(), f"{prefix}/weight_part{i}")
        graph.initializer.append(w)
        inputs = [f"{prefix}/part{i}", w.name] + ([conv.input[2]] if i == 0 and len(conv.input) > 2 else [])
        new_nodes.append(helper.make_node("DequantizeLinear", [f"{prefix}/part{i}_q", *dq.input[1:]],
                                          [inputs[0]], name=f"{prefix}/DequantizeLinear_part{i}"))
        attributes = {a.name: helper.get_attribute_value(a) for a in conv.attribute}
        partials.append(f"{prefix}/partial{i}")
        new_nodes.append(helper.make_node("Conv", inputs, [partials[-1]], name=f"{prefix}/Conv_part{i}", **attributes))
    new_nodes.append(helper.make_node("Sum", partials, [conv.output[0]], name=f"{prefix}/Sum"))
    position = list(graph.node).index(conv)
    kept = [n for n in graph.node if n is not conv and n is not dq]
    index = sum(1 for n in list(graph.node)[:position] if n is not dq)
    del graph.node[:]
    graph.node.extend(kept[:index] + new_nodes + kept[index:])
    return True


def head_as_taps(model: onnx.ModelProto, prefix: str) -> bool:
    """Run the fp32 head's KxK Convs as 1x1 Convs to K*K tap planes, summed shifted.

    PERF: without onnxruntime's blocked (NCHWc) layout, which the service
    turns off (isnet_wsgi/model/session.py), a 3x3 fp32 Conv to one channel is an
    im2col and a one-row GEMM: 62-80 ms a run for `/side1`'s four groups at
    512x512. As a 1x1 Conv (a plain GEMM, no im2col) to one plane per tap,
    with the planes padded and each read at its offset, the head gives the
    same sums in another order (outputs within 2.4e-7). Works on the Convs
    split_head made, or on the head's one Conv; returns False (and changes
    nothing) unless they are stride 1, dilation 1, one group and padded to
    keep the size.
    """
    graph = model.graph
    weights = {t.name: t for t in graph.initializer}
    convs = [n for n in graph.node if n.op_type == "Conv" and n.name.startswith(prefix)
             and n.input[1] in weights]
    consumers = [n for n in graph.node if n.op_type == "Sum" and n.name == f"{prefix}Sum"]
    if not convs or (len(convs) > 1 and not consumers):
        return False
    attributes = {a.name: helper.get_attribute_value(a) for a in convs[0].attribute}
    kernel = [int(k) for k in numpy_helper.to_array(weights[convs[0].input[1]]).shape[2:]]
    same_size = [(k - 1) // 2 for k in kernel] * 2
    if (len(kernel) != 2 or kernel == [1, 1] or any(k % 2 == 0 for k in kernel)
            or attributes.get("strides", [1, 1]) != [1, 1] or attributes.get("dilations", [1, 1]) != [1, 1]
            or attributes.get("group", 1) != 1 or attributes.get("pads") != same_size
            or any(numpy_helper.to_array(weights[c.input[1]]).shape[0] != 1 for c in convs)):
        return False
    taps = kernel[0] * kernel[1]
    bias = next((c.input[2] for c in convs if len(c.input) > 2 and c.input[2]), None)
    rewritten, acc = [], None
    for i, conv in enumerate(convs):
        weight = numpy_helper.to_array(weights[conv.input[1]])[0]  # channels x kh x kw
        # Plane t = dy * kw + dx holds each pixel's contribution to the pixel
        # (dy - pad, dx - pad) away.
        planes = weight.reshape(weight.shape[0], taps).T[:, :, np.newaxis, np.newaxis].copy()
        tap_weight = numpy_helper.from_array(planes, f"{prefix}tap_weight{i}")
        graph.initializer.append(tap_weight)
        planes_out = f"{prefix}tap_planes{i}"
        rewritten.append((conv, [helper.make_node("Conv", [conv.input[0], tap_weight.name], [planes_out],
                                                  name=f"{prefix}Conv_taps{i}", kernel_shape=[1, 1])]))
        if acc is not None:  # add as they come, so at most two sets of planes are alive
            summed = f"{prefix}tap_planes_sum{i}"
            rewritten[-1][1].append(helper.make_node("Add", [acc, planes_out], [summed],
                                                     name=f"{prefix}Add_taps{i}"))
            planes_out = summed
        acc = planes_out
    pad_h, pad_w = same_size[:2]
    shifted = [helper.make_node("Pad", [acc, _add_int64(graph, f"{prefix}tap_pads", [0, 0, pad_h, pad_w, 0, 0, pad_h, pad_w])],
                                [f"{prefix}tap_planes_padded"], name=f"{prefix}Pad_taps", mode="constant")]
    offsets = []
    for t in range(taps):
        dy, dx = divmod(t, kernel[1])
        # Ends counted from the far edge, so no image size is baked in.
        ends = [t + 1, dy - (kernel[0] - 1) or _INT64_MAX, dx - (kernel[1] - 1) or _INT64_MAX]
        offsets.append(f"{prefix}tap{t}")
        shifted.append(helper.make_node("Slice", [
            f"{prefix}tap_planes_padded", _add_int64(graph, f"{prefix}tap{t}_starts", [t, dy, dx]),
            _add_int64(graph, f"{prefix}tap{t}_ends", ends), _add_int64(graph, f"{prefix}tap{t}_axes", [1, 2, 3])],
            [offsets[-1]], name=f"{prefix}Slice_tap{t}"))
    output = consumers[0].output[0] if len(convs) > 1 else convs[0].output[0]
    shifted.append(helper.make_node("Sum", offsets + ([bias] if bias else []), [output], name=f"{prefix}Sum"))
    replaced = {id(conv): nodes for conv, nodes in rewritten}
    nodes = []
    for node in graph.node:
        if id(node) in replaced:
            nodes += replaced[id(node)]
            if len(convs) == 1:
                nodes += shifted
        elif consumers and node is consumers[0]:
            nodes += shifted
        else:
            nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    return True


_INT64_MAX = 2**63 - 1


def _add_int64(graph: onnx.GraphProto, name: str, values: list[int]) -> str:
    graph.initializer.append(numpy_helper.from_array(np.array(values, np.int64), name))
    return name


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
