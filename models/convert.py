"""Graph surgery before quantisation: fp16 -> fp32 and pruning to one output.

The npm package ships ISNet in fp16 with Cast nodes around the graph inputs,
outputs and every Resize (onnxruntime-web lacks some fp16 kernels). The
quantiser wants a plain fp32 graph, so we widen every fp16 tensor, turn the
Casts into no-ops and then drop them. The export also has eleven debugging
outputs (side maps and decoder features at up to 512x512); each one would be
kept alive until the end of a run, so only `output` survives.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

FP16 = TensorProto.FLOAT16
FP32 = TensorProto.FLOAT


def _widen_tensor(tensor: onnx.TensorProto) -> None:
    """Rewrite an fp16 TensorProto as fp32 in place (keeps name and dims)."""
    if tensor.data_type != FP16:
        return
    array = numpy_helper.to_array(tensor).astype(np.float32)
    tensor.CopyFrom(numpy_helper.from_array(array, tensor.name))


def _widen_value_infos(graph: onnx.GraphProto) -> None:
    for value in (*graph.input, *graph.output, *graph.value_info):
        tensor_type = value.type.tensor_type
        if tensor_type.elem_type == FP16:
            tensor_type.elem_type = FP32


def _widen_nodes(graph: onnx.GraphProto) -> None:
    for node in graph.node:
        for attribute in node.attribute:
            if node.op_type == "Cast" and attribute.name == "to" and attribute.i == FP16:
                attribute.i = FP32
            if attribute.type == onnx.AttributeProto.TENSOR:
                _widen_tensor(attribute.t)
            for tensor in attribute.tensors:
                _widen_tensor(tensor)


def fp16_to_fp32(model: onnx.ModelProto) -> onnx.ModelProto:
    """Return a copy of `model` with every fp16 tensor, type and Cast target in fp32."""
    model = _copy(model)
    graph = model.graph
    for tensor in graph.initializer:
        _widen_tensor(tensor)
    _widen_nodes(graph)
    _widen_value_infos(graph)
    return remove_identity_casts(model)


def _element_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every named tensor, from shape inference."""
    inferred = onnx.shape_inference.infer_shapes(model)
    graph = inferred.graph
    types = {t.name: t.data_type for t in graph.initializer}
    for value in (*graph.input, *graph.output, *graph.value_info):
        types[value.name] = value.type.tensor_type.elem_type
    return types


def _rename_input(graph: onnx.GraphProto, old: str, new: str) -> None:
    for node in graph.node:
        for index, name in enumerate(node.input):
            if name == old:
                node.input[index] = new


def remove_identity_casts(model: onnx.ModelProto) -> onnx.ModelProto:
    """Drop Cast nodes whose input already has the target type.

    A Cast that feeds a graph output cannot just vanish: the output keeps its
    public name, so the producer is renamed to it instead.
    """
    types = _element_types(model)
    graph = model.graph
    output_names = {value.name for value in graph.output}
    producers = {out: node for node in graph.node for out in node.output}
    kept = []
    for node in graph.node:
        target = next((a.i for a in node.attribute if a.name == "to"), None)
        if node.op_type != "Cast" or types.get(node.input[0]) != target:
            kept.append(node)
            continue
        source, result = node.input[0], node.output[0]
        if result in output_names and source in producers:
            _rename_output(graph, producers[source], source, result)
        else:
            _rename_input(graph, result, source)
    del graph.node[:]
    graph.node.extend(kept)
    return model


def _rename_output(graph, producer: onnx.NodeProto, old: str, new: str) -> None:
    for index, name in enumerate(producer.output):
        if name == old:
            producer.output[index] = new
    _rename_input(graph, old, new)
    for value in graph.value_info:
        if value.name == old:
            value.name = new


def keep_outputs(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    """Keep only the graph outputs in `names` and the nodes that feed them.

    The nodes come back in topological order: the fp16 export appends its
    Cast nodes at the end of the list, which the ONNX checker rejects.
    """
    model = _copy(model)
    graph = model.graph
    outputs = [value for value in graph.output if value.name in names]
    missing = set(names) - {value.name for value in outputs}
    if missing:
        raise ValueError(f"model has no output(s) {sorted(missing)}")
    del graph.output[:]
    graph.output.extend(outputs)
    kept = _topological_feeders(list(graph.node), names)
    needed = {name for node in kept for name in node.input if name}
    del graph.node[:]
    graph.node.extend(kept)
    _drop_unused(graph, needed | set(names))
    return model


def _topological_feeders(nodes: list[onnx.NodeProto], names: list[str]) -> list[onnx.NodeProto]:
    """Nodes that `names` depend on, producers first (depth-first post-order)."""
    producers = {out: index for index, node in enumerate(nodes) for out in node.output}
    order: list[int] = []
    state: dict[int, bool] = {}  # False while on the stack, True when emitted
    stack = [(producers[name], False) for name in reversed(names) if name in producers]
    while stack:
        index, expanded = stack.pop()
        if expanded:
            state[index] = True
            order.append(index)
            continue
        if index in state:
            continue
        state[index] = False
        stack.append((index, True))
        for name in reversed(nodes[index].input):
            if name in producers and producers[name] not in state:
                stack.append((producers[name], False))
    return [nodes[index] for index in order]


def _drop_unused(graph: onnx.GraphProto, needed: set[str]) -> None:
    initializers = [t for t in graph.initializer if t.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    infos = [v for v in graph.value_info if v.name in needed]
    del graph.value_info[:]
    graph.value_info.extend(infos)


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    return copy


def freeze_resize_sizes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Replace each Resize's computed `sizes` input with a constant.

    The export computes every upsample's target size at run time
    (Shape -> Slice -> Concat of the skip tensor's shape). The shapes are all
    static at 1024 px, and onnxruntime only runs a quantised Resize in uint8
    (dropping its DequantizeLinear/QuantizeLinear pair) when the sizes are a
    constant; otherwise each upsample makes a float copy, 64 MB at 512x512.
    """
    inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    shapes = {
        value.name: [dim.dim_value for dim in value.type.tensor_type.shape.dim]
        for value in (*inferred.graph.value_info, *inferred.graph.output)
    }
    constants = {t.name for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type != "Resize" or len(node.input) < 4 or node.input[3] in constants:
            continue
        shape = shapes.get(node.output[0])
        if not shape or not all(shape):
            continue  # a dynamic shape: leave the computation in place
        name = f"{node.name}/sizes"
        model.graph.initializer.append(numpy_helper.from_array(np.array(shape, np.int64), name))
        node.input[3] = name
    return keep_outputs(model, [value.name for value in model.graph.output])


def rename_io(model: onnx.ModelProto, input_name: str, output_name: str) -> onnx.ModelProto:
    """Give the (single) graph input and output fixed names.

    Exports differ (`input` here, `input.1` elsewhere); the manifest and the
    service see one interface whichever file the weights came from.
    """
    graph = model.graph
    renames = {graph.input[0].name: input_name, graph.output[0].name: output_name}
    for old, new in renames.items():
        if old == new:
            continue
        for node in graph.node:
            node.input[:] = [new if name == old else name for name in node.input]
            node.output[:] = [new if name == old else name for name in node.output]
        for value in (*graph.input, *graph.output, *graph.value_info):
            if value.name == old:
                value.name = new
    return model


def prepare_fp32(source: onnx.ModelProto, input_name: str = "input", output_name: str = "output") -> onnx.ModelProto:
    """The fp32 reference graph: first output only, widened, Casts removed,
    upsample sizes constant, I/O renamed. Works for fp16 and fp32 sources."""
    initializers = {t.name for t in source.graph.initializer}
    inputs = [v for v in source.graph.input if v.name not in initializers]
    if len(inputs) != 1:
        raise ValueError(f"expected one image input, found {[v.name for v in inputs]}")
    model = keep_outputs(source, [source.graph.output[0].name])
    del model.graph.input[:]
    model.graph.input.extend(inputs)
    model = fp16_to_fp32(model)
    model = freeze_resize_sizes(model)
    model = rename_io(model, input_name, output_name)
    model.producer_name = "isnet-wsgi models.build"
    model.producer_version = ""
    onnx.checker.check_model(model)
    return model
