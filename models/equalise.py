"""Equal ranges at the RSU blocks' Concats (exploration: `python -m models.trial
"Concat branches equalised"`; models/README.md has what it measured).

Inside each RSU block the decoder joins two branches with a Concat, and the
quantised Concat puts both on one uint8 scale: the wider branch's. The
narrower one loses bits there (up to 1.6 at stage 4: models.sensitivity).
ReLU commutes with a positive factor, so the decoder branch's Conv can make
its output k times larger (weights and bias times k) and the Conv that reads
the Concat take k times less of those channels (its weights for them over
k): the fp32 function is the same, and with k = wide range / narrow range
both branches reach the Concat with the same range. The decoder branch is
the one scaled because its only consumer is the Concat (through Resizes,
which commute too); the encoder branch also feeds the next Conv.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

COMMUTING = ("Relu", "Resize")


def equalise_concats(model: onnx.ModelProto, highs: dict[str, float]) -> list[dict]:
    """Equalise every two-input Concat read by exactly one Conv, in place,
    from `highs` (each tensor's calibrated upper range); returns what it did."""
    graph = model.graph
    producer = {output: node for node in graph.node for output in node.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    weights = {t.name: t for t in graph.initializer}
    done = []
    for concat in [node for node in graph.node if node.op_type == "Concat" and len(node.input) == 2]:
        readers = consumers.get(concat.output[0], [])
        decoder, encoder = concat.input
        source = _single_path_conv(decoder, producer, consumers)
        if (len(readers) != 1 or readers[0].op_type != "Conv" or source is None
                or highs.get(decoder, 0) <= 0 or highs.get(encoder, 0) <= 0):
            continue
        factor = highs[encoder] / highs[decoder]
        _scale(weights[source.input[1]], factor)
        _scale(weights[source.input[2]], factor)
        reader_weight = weights[readers[0].input[1]]
        values = numpy_helper.to_array(reader_weight).copy()
        channels = numpy_helper.to_array(weights[source.input[1]]).shape[0]
        values[:, :channels] /= factor
        reader_weight.CopyFrom(numpy_helper.from_array(values, reader_weight.name))
        done.append({"concat": concat.name, "conv": source.name, "factor": round(float(factor), 3)})
    return done


def _single_path_conv(tensor: str, producer: dict, consumers: dict) -> onnx.NodeProto | None:
    """The Conv that makes `tensor` through commuting nodes, each tensor on
    the way read by one node only; None if there is no such path."""
    while len(consumers.get(tensor, [])) == 1 and tensor in producer:
        node = producer[tensor]
        if node.op_type == "Conv":
            return node if len(node.input) == 3 else None
        if node.op_type not in COMMUTING:
            return None
        tensor = node.input[0]
    return None


def _scale(tensor: onnx.TensorProto, factor: float) -> None:
    values = numpy_helper.to_array(tensor).astype(np.float32) * np.float32(factor)
    tensor.CopyFrom(numpy_helper.from_array(values, tensor.name))
