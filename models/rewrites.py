"""Rewrites of the quantised graph that remove float copies at 512x512.

Two remove the last float copies where the peak sits: bilinear Resizes run
on uint8 (resize_in_uint8), and the fp32 head reads its input in four
channel groups (split_head). A third makes the head fast without
onnxruntime's blocked layout: each group's 3x3 Conv becomes a 1x1 Conv to
tap planes, summed shifted (head_as_taps). Each returns what it changed and
leaves a graph without the pattern as it was. models/README.md has what
each step measured.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper


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
