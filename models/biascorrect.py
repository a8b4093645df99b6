"""Empirical bias correction of the quantised Convs, stage by stage
(`python -m models.trial --bias-correction`; it lost: models/README.md).

Rounding each Conv's weights to int8 and its input to uint8 shifts the
mean of its output per channel; the shift passes down the network and adds
up. Here each quantised Conv's int32 bias is moved so that, on the
calibration photos, the mean of its activation as the quantised graph keeps
it (the Conv output clipped to the range of the QuantizeLinear after it,
which holds the ReLU) equals the fp32 activation's clipped the same way.
Two simpler targets measured worse (models/README.md): the mean before the
ReLU (dominated by the background, where the ReLU zeroes both), and the
mean where the fp32 output is positive (biased by that very selection).

Stage by stage, not all at once: a Conv's shift is measured with every
earlier stage already corrected, so a correction is not made twice (the
one-shot version compounded; docs/model-recipes.md).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from models import probe, quantize

# Every SUBSAMPLE-th pixel of each map is kept to solve the shifts on.
SUBSAMPLE = 7


def _shifts(stage: probe.Stage, pairs: Iterable[tuple[list[np.ndarray], list[np.ndarray]]]
            ) -> list[np.ndarray]:
    """Per channel, the bias shift that makes the mean of the quantised
    activation (the Conv output clipped to its QuantizeLinear's range, which
    holds the ReLU) equal the fp32 activation's clipped the same way: only
    the error a bias can mend, not the clipping the range chose."""
    kept_fp: list[list[np.ndarray]] = [[] for _ in stage.convs]
    kept_q: list[list[np.ndarray]] = [[] for _ in stage.convs]
    for wanted, got in pairs:
        for index, (fp, q) in enumerate(zip(wanted, got)):
            channels = fp.shape[1]
            kept_fp[index].append(fp.reshape(channels, -1)[:, ::SUBSAMPLE])
            kept_q[index].append(q.reshape(channels, -1)[:, ::SUBSAMPLE])
    return [matching_shift(np.concatenate(fps, axis=1), np.concatenate(qs, axis=1), low, high)
            for (low, high), fps, qs in zip(stage.ranges, kept_fp, kept_q)]


def matching_shift(fp: np.ndarray, q: np.ndarray, low: float, high: float) -> np.ndarray:
    """Per row (channel), the shift s for which clip(q + s) has the mean of
    clip(fp), both clipped to [low, high]; found by bisection, since that
    mean grows with s."""
    target = np.clip(fp, low, high).mean(axis=1)
    below, above = np.full(len(target), low - high), np.full(len(target), high - low)
    for _ in range(40):
        middle = (below + above) / 2
        too_low = np.clip(q + middle[:, None], low, high).mean(axis=1) < target
        below, above = np.where(too_low, middle, below), np.where(too_low, above, middle)
    return (below + above) / 2


def correct(quantised: onnx.ModelProto, fp32_path: Path,
            inputs: Callable[[], Iterable[np.ndarray]], threads: int = 2) -> dict[str, list[int]]:
    """Move the int32 biases of `quantised` (a float-input graph: see
    quantize.unfold_input_quantisation) in place; returns each Conv's change
    in bias steps, by node name."""
    fp32 = onnx.load(fp32_path)
    producer = {output: node for node in quantised.graph.node for output in node.output}
    initializers = {tensor.name: tensor for tensor in quantised.graph.initializer}
    changes = {}
    for stage in probe.stages(quantised, fp32):
        # Measured on the graph as the earlier stages' corrections left it.
        shifts = _shifts(stage, probe.activations(stage, quantised, fp32, inputs(), threads))
        for node, shift in zip(stage.convs, shifts):
            dq = producer[node.input[2]]
            bias, scale = initializers[dq.input[0]], initializers[dq.input[1]]
            steps = np.rint(shift / numpy_helper.to_array(scale).astype(np.float64))
            value = numpy_helper.to_array(bias).astype(np.int64) + steps.astype(np.int64)
            bias.CopyFrom(numpy_helper.from_array(
                np.clip(value, -2**31, 2**31 - 1).astype(np.int32), bias.name))
            changes[node.name] = steps.astype(int).tolist()
    return changes


def corrected_copy(model_path: Path, out_path: Path, fp32_path: Path,
                   inputs: Callable[[], Iterable[np.ndarray]], threads: int = 2) -> dict[str, list[int]]:
    """`model_path` (the built, uint8-input model) with its biases corrected, to `out_path`."""
    model = onnx.load(model_path)
    folded = quantize.unfold_input_quantisation(model)
    changes = correct(model, fp32_path, inputs, threads)
    if folded:
        quantize.fold_input_quantisation(model)
    onnx.save(model, out_path)
    return changes
