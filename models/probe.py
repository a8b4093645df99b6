"""A quantised graph's Conv activations beside the fp32 graph's, one stage at a time.

What models.biascorrect and models.sensitivity both measure. Each Conv is
taken before its QuantizeLinear (which holds the ReLU), with the range that
QuantizeLinear keeps, so a caller can compare both activations as the
quantised graph passes them on. One stage's tensors at a time: every
activation of a 1024-px run at once is GBs (onnxruntime's qdq_loss_debug
holds them all).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper


@dataclass(frozen=True)
class Stage:
    """One stage's quantised Convs (graph order), their outputs' names in the
    fp32 graph, and the float range each one's QuantizeLinear keeps."""

    name: str
    convs: list[onnx.NodeProto]
    fp32_outputs: list[str]
    ranges: list[tuple[float, float]]


def quantised_convs(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """The Convs whose bias is an int32 initializer behind a DequantizeLinear, in graph order."""
    producer = {output: node for node in model.graph.node for output in node.output}
    initializers = {tensor.name for tensor in model.graph.initializer}
    return [node for node in model.graph.node
            if node.op_type == "Conv" and len(node.input) > 2
            and (dq := producer.get(node.input[2])) is not None
            and dq.op_type == "DequantizeLinear" and dq.input[0] in initializers]


def stage_of(node_name: str) -> str:
    """'/stage1/rebnconv1/conv_s1/Conv' -> '/stage1/'."""
    return "/" + node_name.split("/")[1] + "/"


def stages(quantised: onnx.ModelProto, fp32: onnx.ModelProto) -> list[Stage]:
    """The quantised Convs of ``quantised``, by stage, matched by name with ``fp32``'s."""
    fp32_output = {node.name: node.output[0] for node in fp32.graph.node if node.op_type == "Conv"}
    initializers = {t.name: t for t in quantised.graph.initializer}
    quantise_of = {node.input[0]: node for node in quantised.graph.node
                   if node.op_type == "QuantizeLinear"}

    def kept_range(tensor: str) -> tuple[float, float]:
        quantise = quantise_of[tensor]
        scale, zero = (numpy_helper.to_array(initializers[name]).item() for name in quantise.input[1:3])
        return (0 - zero) * scale, (255 - zero) * scale

    grouped: dict[str, list[onnx.NodeProto]] = {}
    for node in quantised_convs(quantised):
        grouped.setdefault(stage_of(node.name), []).append(node)
    return [Stage(name, convs, [fp32_output[node.name] for node in convs],
                  [kept_range(node.output[0]) for node in convs])
            for name, convs in grouped.items()]


def activations(stage: Stage, quantised: onnx.ModelProto, fp32: onnx.ModelProto,
                inputs: Iterable[np.ndarray], threads: int = 2
                ) -> Iterator[tuple[list[np.ndarray], list[np.ndarray]]]:
    """Per input, the stage's Conv outputs from ``fp32`` and from ``quantised``
    as it is when this is called (a caller may have changed it since)."""
    wanted_names, got_names = stage.fp32_outputs, [node.output[0] for node in stage.convs]
    wanted_session = session_with_outputs(fp32, wanted_names, threads)
    got_session = session_with_outputs(quantised, got_names, threads)
    for tensor in inputs:
        yield (wanted_session.run(wanted_names, {wanted_session.get_inputs()[0].name: tensor}),
               got_session.run(got_names, {got_session.get_inputs()[0].name: tensor}))


def session_with_outputs(model: onnx.ModelProto, outputs: list[str],
                          threads: int) -> ort.InferenceSession:
    model = onnx.ModelProto.FromString(model.SerializeToString())
    known = {value.name for value in model.graph.output}
    model.graph.output.extend(onnx.helper.make_empty_tensor_value_info(name)
                              for name in outputs if name not in known)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
