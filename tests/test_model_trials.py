"""The exploration tools behind models/README.md's round-2 rows (bias
correction, float stages on 8-bit weights, weight scales by rounding error,
weights rounded by their inputs, activation SNR): their arithmetic, on small inputs. The trials themselves take minutes:
python -m models.trial."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    QuantType,
    quantize_static,
)

from models.biascorrect import matching_shift
from models.equalise import equalise_concats
from models.gptq import _output_matching, patches, round_to_inputs
from models.rounding import CLIP_FLOOR, least_error_scales, rescale_weights
from models.sensitivity import activation_snr
from models.trial import inner_tensors, int8_weights


def _conv_model(weight: np.ndarray, bias: np.ndarray | None = None) -> onnx.ModelProto:
    out_channels, in_channels = weight.shape[:2]
    inputs = ["x", "w"] + (["b"] if bias is not None else [])
    initializers = [numpy_helper.from_array(weight, "w")]
    if bias is not None:
        initializers.append(numpy_helper.from_array(bias, "b"))
    graph = helper.make_graph(
        [helper.make_node("Conv", inputs, ["y"], name="/stage6/conv/Conv", pads=[1, 1, 1, 1])],
        "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, in_channels, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, out_channels, 8, 8])], initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def test_the_shift_is_the_mean_error_where_nothing_is_clipped():
    rng = np.random.default_rng(3)
    fp = rng.uniform(1, 2, size=(3, 500))
    shift = matching_shift(fp, fp - [[0.3], [-0.1], [0.0]], low=0.0, high=5.0)
    assert np.allclose(shift, [0.3, -0.1, 0.0], atol=1e-6)


def test_the_shift_matches_the_clipped_means_not_the_raw_ones():
    # Half the values below the ReLU: a raw-mean shift would move them too.
    rng = np.random.default_rng(4)
    fp = rng.normal(0, 1, size=(2, 4000))
    q = fp - 0.2 + rng.normal(0, 0.05, size=fp.shape)
    shift = matching_shift(fp, q, low=0.0, high=1.5)
    assert np.allclose(np.clip(q + shift[:, None], 0, 1.5).mean(axis=1),
                       np.clip(fp, 0, 1.5).mean(axis=1), atol=1e-6)


def test_int8_weights_keep_8_bits_per_channel_behind_a_dequantise():
    rng = np.random.default_rng(5)
    # Channels of very different size: per-channel scales keep the small ones.
    weight = (rng.normal(size=(6, 4, 3, 3)) * np.array([1, 10, 0.01, 1, 1, 0])[:, None, None, None])
    model = _conv_model(weight.astype(np.float32))
    x = rng.normal(size=(1, 4, 8, 8)).astype(np.float32)
    before = _run(model, x)
    assert int8_weights(model, ("/other/",)) == 0
    assert int8_weights(model, ("/stage6/",)) == 1
    stored = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    integers = stored["w_int8"]
    assert integers.dtype == np.int8 and integers.min() >= -127
    assert np.abs(integers).reshape(6, -1).max(axis=1).tolist() == [127] * 5 + [0]
    assert "w" not in stored
    after = _run(model, x)
    per_channel = np.abs(after - before).max(axis=(0, 2, 3)) / np.maximum(np.abs(before).max(axis=(0, 2, 3)), 1e-12)
    assert per_channel.max() < 0.02


def _error(weight: np.ndarray, scales: np.ndarray, largest: int) -> np.ndarray:
    rows = weight.reshape(len(weight), -1)
    rounded = np.clip(np.rint(rows / scales[:, None]), -largest, largest) * scales[:, None]
    return ((rounded - rows) ** 2).sum(axis=1)


def test_a_coarse_grid_clips_the_tails_for_finer_steps():
    # 15 levels (as 4-bit weights): there a Gaussian channel loses least with
    # its range clipped well inside its largest weight.
    rng = np.random.default_rng(6)
    weight = rng.normal(0, 0.05, size=(4, 64, 3, 3))
    by_max = np.abs(weight).reshape(4, -1).max(axis=1) / 7
    chosen = least_error_scales(weight, 7)
    assert np.all(chosen < 0.9 * by_max)
    assert np.all(_error(weight, chosen, 7) < 0.8 * _error(weight, by_max, 7))
    # Never clipped below the floor; an all-zero channel keeps a usable scale.
    assert np.all(chosen >= CLIP_FLOOR * by_max - 1e-12)
    assert least_error_scales(np.zeros((1, 2, 1, 1)), 7).tolist() == [1.0]


def test_on_the_7_bit_grid_no_channel_loses_more_than_with_max_scales():
    rng = np.random.default_rng(8)
    weight = rng.laplace(0, 0.05, size=(16, 64, 3, 3))
    by_max = np.abs(weight).reshape(16, -1).max(axis=1) / 64
    chosen = least_error_scales(weight, 64)
    assert np.all(_error(weight, chosen, 64) <= _error(weight, by_max, 64))
    assert np.any(chosen < by_max)


def test_one_far_outlier_is_kept_when_clipping_it_would_cost_more():
    weight = np.full((1, 8, 3, 3), 0.01)
    weight[0, 0, 0, 0] = 2.0
    by_max = np.abs(weight).max() / 64
    assert least_error_scales(weight, 64)[0] == by_max


class _Photos(CalibrationDataReader):
    def __init__(self, inputs):
        self.inputs = iter(inputs)

    def get_next(self):
        return next(({"x": x} for x in self.inputs), None)


def test_a_quantised_conv_is_requantised_in_range_with_its_bias_scale(tmp_path):
    rng = np.random.default_rng(7)
    weight = rng.laplace(0, 0.05, size=(4, 8, 3, 3)).astype(np.float32)
    bias = rng.normal(0, 0.5, size=4).astype(np.float32)
    fp32 = _conv_model(weight, bias)
    onnx.save(fp32, tmp_path / "fp32.onnx")
    inputs = [rng.uniform(0, 1, size=(1, 8, 8, 8)).astype(np.float32) for _ in range(4)]
    quantize_static(str(tmp_path / "fp32.onnx"), str(tmp_path / "q.onnx"), _Photos(inputs),
                    quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    quantised = onnx.load(tmp_path / "q.onnx")
    before = _run(quantised, inputs[0])
    assert rescale_weights(quantised, fp32) == 1
    values = {t.name: numpy_helper.to_array(t) for t in quantised.graph.initializer}
    producer = {output: node for node in quantised.graph.node for output in node.output}
    conv = next(node for node in quantised.graph.node if node.op_type == "Conv")
    activation, weights, biases = (producer[name] for name in conv.input)
    integers, scales = values[weights.input[0]], values[weights.input[1]]
    assert integers.dtype == np.int8 and np.abs(integers).max() == 64  # the 7-bit range, kept
    assert np.all(scales <= np.abs(weight).reshape(4, -1).max(axis=1) / 64 * (1 + 1e-6))
    assert np.allclose(values[biases.input[1]], values[activation.input[1]] * scales, rtol=1e-6)
    assert np.allclose(values[biases.input[0]] * values[biases.input[1]], bias, atol=values[biases.input[1]].max())
    after, wanted = _run(quantised, inputs[0]), _run(fp32, inputs[0])
    # Still the same convolution, to within the grid's steps.
    assert np.abs(after - wanted).max() < 0.1 * np.abs(wanted).max()
    assert np.abs(before - wanted).max() < 0.1 * np.abs(wanted).max()


def _quantised_pair(tmp_path, weight: np.ndarray, bias: np.ndarray, inputs: list[np.ndarray]):
    onnx.save(_conv_model(weight, bias), tmp_path / "fp32.onnx")
    quantize_static(str(tmp_path / "fp32.onnx"), str(tmp_path / "q.onnx"), _Photos(inputs),
                    quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return tmp_path / "fp32.onnx", tmp_path / "q.onnx"


def test_activation_snr_is_high_for_a_faithful_model_and_falls_with_its_error(tmp_path):
    rng = np.random.default_rng(9)
    weight = rng.normal(0, 0.1, size=(4, 8, 3, 3)).astype(np.float32)
    inputs = [rng.uniform(0, 1, size=(1, 8, 8, 8)).astype(np.float32) for _ in range(3)]
    fp32, quantised = _quantised_pair(tmp_path, weight, np.zeros(4, np.float32), inputs)
    [row] = activation_snr(quantised, fp32, inputs, threads=1)
    assert row["node"] == "/stage6/conv/Conv" and row["stage"] == "/stage6/"
    assert 25 < row["snr_db"] < 80  # uint8 activations: close, not exact
    # The same quantised model against an fp32 model whose weights differ.
    onnx.save(_conv_model(weight * 1.1, np.zeros(4, np.float32)), tmp_path / "other.onnx")
    [worse] = activation_snr(quantised, tmp_path / "other.onnx", inputs, threads=1)
    assert worse["snr_db"] < row["snr_db"] - 5


def _rsu_junction(rng) -> onnx.ModelProto:
    """x -> encoder Conv+ReLU (also read by another Conv) and decoder
    Conv+ReLU -> Resize -> Concat(decoder, encoder) -> Conv: an RSU decoder step."""
    def conv(name, inputs, out_channels, in_channels, scale):
        weight = (rng.normal(size=(out_channels, in_channels, 1, 1)) * scale).astype(np.float32)
        return (helper.make_node("Conv", [inputs, f"{name}_w", f"{name}_b"], [f"{name}_y"], name=name),
                [numpy_helper.from_array(weight, f"{name}_w"),
                 numpy_helper.from_array(rng.normal(size=out_channels).astype(np.float32), f"{name}_b")])
    nodes, weights = [], []
    for name, inputs, out_channels, in_channels, scale in [
            ("/stage5/enc/Conv", "x", 3, 2, 5.0), ("/stage5/dec/Conv", "x", 2, 2, 0.5)]:
        node, values = conv(name, inputs, out_channels, in_channels, scale)
        nodes += [node, helper.make_node("Relu", [f"{name}_y"], [f"{name}_r"])]
        weights += values
    nodes.append(helper.make_node("Resize", ["/stage5/dec/Conv_r", "", "scales"], ["up"], mode="linear"))
    weights.append(numpy_helper.from_array(np.array([1, 1, 1, 1], np.float32), "scales"))
    nodes.append(helper.make_node("Concat", ["up", "/stage5/enc/Conv_r"], ["joined"], axis=1, name="/stage5/Concat"))
    for name, inputs, in_channels in [("/stage5/reader/Conv", "joined", 5), ("/stage5/next/Conv", "/stage5/enc/Conv_r", 3)]:
        node, values = conv(name, inputs, 2, in_channels, 1.0)
        nodes.append(node)
        weights += values
    graph = helper.make_graph(nodes, "rsu", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])],
                              [helper.make_tensor_value_info(name, TensorProto.FLOAT, None)
                               for name in ("/stage5/reader/Conv_y", "/stage5/next/Conv_y")], weights)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_equalised_concats_keep_the_function_and_give_both_branches_one_range():
    rng = np.random.default_rng(10)
    model = _rsu_junction(rng)
    x = rng.normal(size=(1, 2, 4, 4)).astype(np.float32)

    def outputs(graph):
        extra = onnx.ModelProto.FromString(graph.SerializeToString())
        extra.graph.output.extend([helper.make_empty_tensor_value_info(name) for name in ("up", "/stage5/enc/Conv_r")])
        session = ort.InferenceSession(extra.SerializeToString(), providers=["CPUExecutionProvider"])
        return session.run(None, {"x": x})
    before = outputs(model)
    highs = {"up": float(before[2].max()), "/stage5/enc/Conv_r": float(before[3].max())}
    [change] = equalise_concats(model, highs)
    assert change["conv"] == "/stage5/dec/Conv" and change["factor"] > 1  # the narrow decoder branch grows
    after = outputs(model)
    assert np.allclose(after[0], before[0], rtol=1e-5, atol=1e-5)  # the Concat's reader: the same
    assert np.array_equal(after[1], before[1])  # the encoder's other reader: untouched
    assert np.isclose(after[2].max(), after[3].max(), rtol=1e-5)  # one range for both branches



def test_patches_read_what_the_conv_reads_with_its_stride_dilation_and_padding():
    rng = np.random.default_rng(11)
    x = rng.normal(size=(1, 3, 9, 11)).astype(np.float32)
    weight = rng.normal(size=(4, 3, 3, 3)).astype(np.float32)
    for attributes in ({"pads": [1, 1, 1, 1], "strides": [2, 2]}, {"pads": [2, 2, 2, 2], "dilations": [2, 2]}):
        conv = helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[3, 3], **attributes)
        graph = helper.make_graph([conv], "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                                  [numpy_helper.from_array(weight, "w")])
        y = _run(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), x)[0]
        positions = np.arange(y.shape[1] * y.shape[2])
        rows = patches(x[0], conv, positions)
        assert np.allclose(rows @ weight.reshape(4, -1).T, y.reshape(4, -1).T, atol=1e-4)


def test_weights_rounded_by_their_inputs_lose_less_output_than_nearest_rounding():
    # Correlated, non-negative inputs (post-ReLU neighbours): where nearest
    # rounding's errors add up and GPTQ's cancel.
    rng = np.random.default_rng(12)
    shared = rng.normal(size=(5000, 16))
    x = np.maximum(np.repeat(shared, 9, axis=1) + 0.3 * rng.normal(size=(5000, 144)), 0)
    weight = rng.normal(size=(8, 16, 3, 3)) * 0.05
    scales = np.abs(weight).reshape(8, -1).max(axis=1) / 64
    integers = round_to_inputs(weight, scales, 64, x.T @ x)
    nearest = np.rint(weight / scales[:, None, None, None])

    def output_error(q: np.ndarray) -> float:
        return float(np.square((weight - q * scales[:, None, None, None]).reshape(8, -1) @ x.T).mean())

    assert np.array_equal(integers, np.rint(integers)) and np.abs(integers).max() <= 64
    assert output_error(integers) < 0.5 * output_error(nearest)


def test_output_matching_keeps_the_weights_for_exact_inputs_and_undoes_a_gain():
    rng = np.random.default_rng(13)
    x = np.maximum(rng.normal(size=(4000, 18)), 0)
    weight = rng.normal(size=(3, 2, 3, 3))
    assert np.allclose(_output_matching(weight, x.T @ x, x.T @ x), weight)
    # The inputs arrive twice as large: weights of half the size give the fp32 outputs back.
    got = 2 * x
    # (within the damping, which pulls towards the fp32 weights)
    assert np.allclose(_output_matching(weight, got.T @ got, got.T @ x), weight / 2, rtol=0.03, atol=0.01)


def test_inner_tensors_are_those_no_node_outside_the_stage_reads():
    # /stage6/ Conv -> Relu -> Resize outside: the Conv's output is inner,
    # the Relu's is read by the Resize (which takes no uint16), the input is made outside.
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="/stage6/conv/Conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"], name="/stage6/relu/Relu"),
             helper.make_node("Resize", ["r", "", "scales"], ["y"], name="/Resize", mode="linear")]
    initializers = [numpy_helper.from_array(np.ones((2, 2, 3, 3), np.float32), "w"),
                    numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")]
    graph = helper.make_graph(nodes, "stage", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 8, 8])], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    assert inner_tensors(model, ("/stage6/",)) == ["c"]
