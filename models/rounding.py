"""Each weight channel's scale, chosen by its rounding error (exploration:
`python -m models.trial "weight ranges clipped to >= 0.7 of max|w|"`; it
won on the calibration photos and not on the held-out ones, so the build
keeps onnxruntime's scales: models/README.md).

onnxruntime's quantiser gives every output channel of a Conv the scale
max|w| / 64 (7-bit weights, quantize.Recipe.reduce_range), so that the
largest weight lands exactly on the grid's end. One outlier then sets the
step for the whole channel. Here each channel's scale is the one, among
clippings of that range down to CLIP_FLOOR of it, that minimises the
channel's squared rounding error; the few weights past the end are clipped,
and every other weight gets a finer step. The integers stay in the same
range, so the same kernels run (and the same masks come out) on every CPU,
at the same memory and time.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

# The smallest fraction of max|w| a channel's range may be clipped to
# (models/trial.py tries 0.3, 0.5, 0.7 and 0.8).
CLIP_FLOOR = 0.7
CANDIDATES = 41


def least_error_scales(weight: np.ndarray, largest: int, clip_floor: float = CLIP_FLOOR) -> np.ndarray:
    """Per output channel (axis 0) of `weight`, the scale whose rounding to
    integers in [-largest, largest] loses the least, in squared error."""
    rows = weight.reshape(len(weight), -1).astype(np.float64)
    top = np.abs(rows).max(axis=1)
    best, best_error = np.where(top > 0, top / largest, 1.0), np.full(len(rows), np.inf)
    for fraction in np.linspace(clip_floor, 1.0, CANDIDATES):
        scale = np.where(top > 0, fraction * top / largest, 1.0)
        rounded = np.clip(np.rint(rows / scale[:, None]), -largest, largest) * scale[:, None]
        error = ((rounded - rows) ** 2).sum(axis=1)
        better = error < best_error
        best, best_error = np.where(better, scale, best), np.where(better, error, best_error)
    return best


def rescale_weights(model: onnx.ModelProto, fp32: onnx.ModelProto, clip_floor: float = CLIP_FLOOR) -> int:
    """Requantise every statically quantised Conv of `model` (weights and
    int32 bias behind DequantizeLinears) from `fp32`'s weights, Convs matched
    by name, with least_error_scales. Returns how many Convs changed."""
    initializers = {t.name: t for t in model.graph.initializer}
    producer = {output: node for node in model.graph.node for output in node.output}
    fp32_values = {t.name: t for t in fp32.graph.initializer}
    fp32_convs = {node.name: node for node in fp32.graph.node if node.op_type == "Conv"}

    def array(name: str) -> np.ndarray:
        return numpy_helper.to_array(initializers[name])

    def replace(name: str, value: np.ndarray) -> None:
        initializers[name].CopyFrom(numpy_helper.from_array(value, name))

    changed = 0
    for node in model.graph.node:
        dequantise = [producer.get(name) for name in node.input]
        if (node.op_type != "Conv" or node.name not in fp32_convs or len(node.input) < 3
                or any(dq is None or dq.op_type != "DequantizeLinear" for dq in dequantise)
                or dequantise[1].input[0] not in initializers or dequantise[2].input[0] not in initializers
                or array(dequantise[1].input[0]).dtype != np.int8):  # symmetric int8 weights only
            continue
        activation, weight, bias = dequantise
        original = fp32_convs[node.name]
        weights = numpy_helper.to_array(fp32_values[original.input[1]])
        biases = numpy_helper.to_array(fp32_values[original.input[2]]).astype(np.float64)
        largest = int(np.abs(array(weight.input[0])).max())
        scales = least_error_scales(weights, largest, clip_floor).astype(np.float32)
        shape = (-1,) + (1,) * (weights.ndim - 1)
        integers = np.clip(np.rint(weights / scales.reshape(shape)), -largest, largest)
        replace(weight.input[0], integers.astype(array(weight.input[0]).dtype))
        replace(weight.input[1], scales)
        # The bias's scale is the input's times the weight's, as the integer kernels require.
        bias_scales = (array(activation.input[1]).astype(np.float32) * scales).astype(np.float32)
        replace(bias.input[1], bias_scales)
        replace(bias.input[0], np.rint(biases / bias_scales).astype(np.int32))
        changed += 1
    return changed
