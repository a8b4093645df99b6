"""Unit tests of the model build steps, on tiny graphs made here (no download)."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from isnet_wsgi.model.segmenter import ModelInput
from models import build, convert, measure, quantize, ranges, rewrites, source
from models.manifest import MODEL_PATH, make_manifest, write_manifest

SIDE_PX = 8


def _conv(name: str, x: str, out: str, channels_in: int, channels_out: int, dtype) -> tuple:
    weight = numpy_helper.from_array(
        (np.arange(channels_out * channels_in * 9).reshape(channels_out, channels_in, 3, 3) % 7 - 3)
        .astype(dtype) / 10, f"{name}.weight")
    node = helper.make_node("Conv", [x, weight.name], [out], name=f"/{name}/Conv", pads=[1, 1, 1, 1])
    return node, weight


def tiny_fp16_isnet() -> onnx.ModelProto:
    """An fp16 graph shaped like the npm export: Casts around float32 I/O, a
    Constant, a Cast around a bilinear Resize whose size is computed from a
    skip tensor's shape, a Concat junction and a 1-channel head, plus a
    second (debugging) output."""
    nodes, weights = [], []
    nodes.append(helper.make_node("Cast", ["input"], ["x16"], to=TensorProto.FLOAT16, name="graph_input_cast0"))
    for name, x, out, cin, cout in (("conv_in", "x16", "a", 3, 4), ("stage1/rebnconvin/conv_s1", "a_r", "b", 4, 4),
                                    ("stage2/rebnconvin/conv_s1", "b_r", "c", 4, 4)):
        node, weight = _conv(name, x, out, cin, cout, np.float16)
        nodes += [node, helper.make_node("Relu", [out], [out + "_r"], name=f"/{name}/Relu")]
        weights.append(weight)
    half = helper.make_tensor("half", TensorProto.FLOAT16, [], [0.5])
    nodes += [
        helper.make_node("Constant", [], ["k"], value=half, name="/Constant"),
        helper.make_node("Mul", ["c_r", "k"], ["c_half"], name="/Mul"),
        helper.make_node("Cast", ["c_half"], ["c32"], to=TensorProto.FLOAT, name="/Resize_4_input_cast0"),
        helper.make_node("Shape", ["b_r"], ["target"], name="/Shape"),
        helper.make_node("Resize", ["c32", "", "", "target"], ["up32"], mode="linear", name="/Resize_4"),
        helper.make_node("Cast", ["up32"], ["up"], to=TensorProto.FLOAT16, name="/Resize_4_output_cast0"),
        helper.make_node("Concat", ["up", "b_r"], ["cat"], axis=1, name="/Concat_9"),
    ]
    head, head_weight = _conv("side1", "cat", "logit", 8, 1, np.float16)
    nodes += [head, helper.make_node("Sigmoid", ["logit"], ["prob"], name="/Sigmoid"),
              helper.make_node("Cast", ["prob"], ["output"], to=TensorProto.FLOAT, name="graph_output_cast0"),
              helper.make_node("Cast", ["c_r"], ["debug"], to=TensorProto.FLOAT, name="graph_output_cast1")]
    weights.append(head_weight)
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, SIDE_PX, SIDE_PX])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 1, SIDE_PX, SIDE_PX]),
         helper.make_tensor_value_info("debug", TensorProto.FLOAT, [1, 4, SIDE_PX, SIDE_PX])],
        weights)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(model: onnx.ModelProto, batch: np.ndarray) -> np.ndarray:
    """The model's output for a float batch, quantised first if it takes uint8."""
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return measure.ModelSession(session, quantize.input_quantisation(model)).run(batch)


def _batch() -> np.ndarray:
    return (np.linspace(-0.5, 0.5, 3 * SIDE_PX * SIDE_PX, dtype=np.float32)).reshape(1, 3, SIDE_PX, SIDE_PX)


def test_fp16_to_fp32_leaves_no_fp16_and_keeps_the_result():
    fp16 = tiny_fp16_isnet()
    fp32 = convert.prepare_fp32(fp16)
    types = {t.data_type for t in fp32.graph.initializer}
    types |= {n.attribute[0].t.data_type for n in fp32.graph.node if n.op_type == "Constant"}
    types |= {v.type.tensor_type.elem_type for v in (*fp32.graph.input, *fp32.graph.output, *fp32.graph.value_info)}
    assert TensorProto.FLOAT16 not in types and TensorProto.FLOAT in types
    assert not [n for n in fp32.graph.node if n.op_type == "Cast"]
    assert [o.name for o in fp32.graph.output] == ["output"]
    np.testing.assert_allclose(_run(fp32, _batch()), _run(fp16, _batch()), atol=2e-3)


def test_prepare_fp32_accepts_fp32_sources_with_other_io_names():
    fp32 = convert.prepare_fp32(tiny_fp16_isnet())
    fp32 = convert.rename_io(fp32, "input.1", "1959")
    again = convert.prepare_fp32(fp32)
    assert [i.name for i in again.graph.input] == ["input"]
    assert [o.name for o in again.graph.output] == ["output"]
    np.testing.assert_allclose(_run(again, _batch()), _run(convert.prepare_fp32(tiny_fp16_isnet()), _batch()))


def test_keep_outputs_drops_the_debug_branch():
    model = convert.keep_outputs(tiny_fp16_isnet(), ["output"])
    assert "graph_output_cast1" not in {n.name for n in model.graph.node}


def test_high_res_recipe_selects_the_512px_part_and_leaves_side1_alone():
    model = convert.prepare_fp32(tiny_fp16_isnet())
    recipe = quantize.Recipe(static_prefixes=quantize.HIGH_RES_PREFIXES, static_nodes=quantize.HIGH_RES_NODES)
    static = quantize.static_nodes(model, recipe)
    assert set(static) == {"/conv_in/Conv", "/conv_in/Relu", "/stage1/rebnconvin/conv_s1/Conv",
                           "/stage1/rebnconvin/conv_s1/Relu", "/Resize_4", "/Concat_9"}
    assert quantize.dynamic_nodes(model, recipe) == ["/stage2/rebnconvin/conv_s1/Conv"]


def test_default_recipe_is_static_everywhere_but_the_head():
    model = convert.prepare_fp32(tiny_fp16_isnet())
    static = quantize.static_nodes(model, quantize.Recipe())
    assert "/stage2/rebnconvin/conv_s1/Conv" in static
    assert not [name for name in static if name.startswith("/side1/")]
    assert "/Mul" not in static and "/Sigmoid" not in static  # op types outside the recipe
    assert quantize.dynamic_nodes(model, quantize.Recipe()) == []


def test_quantize_end_to_end_on_the_tiny_graph(tmp_path):
    fp32_path = tmp_path / "fp32.onnx"
    onnx.save(convert.prepare_fp32(tiny_fp16_isnet()), fp32_path)
    samples = [_batch(), -_batch(), _batch()[:, ::-1].copy()]
    out = tmp_path / "q.onnx"
    facts = quantize.quantize(fp32_path, out, lambda: iter(samples), quantize.Recipe())
    assert facts["calibration_samples"] == 3 and facts["static_nodes"] > 0
    ops = {n.op_type for n in onnx.load(out).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert _run(onnx.load(out), _batch()).shape == (1, 1, SIDE_PX, SIDE_PX)


def test_upsample_sizes_become_constants():
    model = convert.prepare_fp32(tiny_fp16_isnet())
    resize = next(n for n in model.graph.node if n.op_type == "Resize")
    assert resize.input[3] in {t.name for t in model.graph.initializer}
    assert "Shape" not in {n.op_type for n in model.graph.node}


def _quantised_tiny(tmp_path, recipe: quantize.Recipe):
    fp32_path = tmp_path / "fp32.onnx"
    onnx.save(convert.prepare_fp32(tiny_fp16_isnet()), fp32_path)
    out = tmp_path / (f"q-{recipe.uint8_resize}-{recipe.head_parts}-{recipe.head_taps}-"
                      f"{recipe.reduce_range}-{recipe.uint8_input}.onnx")
    quantize.quantize(fp32_path, out, lambda: iter([_batch(), -_batch()]), recipe)
    return onnx.load(out)


def test_bilinear_resize_runs_on_uint8_and_the_head_in_channel_groups(tmp_path):
    plain = _quantised_tiny(tmp_path, quantize.Recipe(uint8_resize=False, head_parts=1))
    rewritten = _quantised_tiny(tmp_path, quantize.Recipe())
    producers = {out: n for n in rewritten.graph.node for out in n.output}
    resize = next(n for n in rewritten.graph.node if n.op_type == "Resize")
    assert producers[resize.input[0]].op_type != "DequantizeLinear"
    head = [n for n in rewritten.graph.node if n.name.startswith("/side1/")]
    assert {"Split", "DequantizeLinear", "Conv"} <= {n.op_type for n in head}
    assert len([n for n in head if n.op_type == "DequantizeLinear"]) == 4
    # Same result up to one uint8 step of the upsampled tensor.
    np.testing.assert_allclose(_run(rewritten, _batch()), _run(plain, _batch()), atol=0.02)


@pytest.mark.parametrize("head_parts", [1, 4])
def test_the_head_as_1x1_taps_sums_what_its_3x3_conv_did(tmp_path, head_parts):
    as_conv = _quantised_tiny(tmp_path, quantize.Recipe(head_parts=head_parts, head_taps=False))
    as_taps = _quantised_tiny(tmp_path, quantize.Recipe(head_parts=head_parts))
    head = [n for n in as_taps.graph.node if n.name.startswith("/side1/")]
    weights = {t.name: numpy_helper.to_array(t) for t in as_taps.graph.initializer}
    kernels = {weights[n.input[1]].shape[2:] for n in head if n.op_type == "Conv"}
    assert kernels == {(1, 1)} and len([n for n in head if n.op_type == "Slice"]) == 9
    assert len([n for n in head if n.op_type == "Conv"]) == head_parts
    # The same sums in another order: float rounding apart, nothing changes.
    np.testing.assert_allclose(_run(as_taps, _batch()), _run(as_conv, _batch()), atol=1e-5)
    assert not rewrites.head_as_taps(as_taps, "/side1/")  # nothing left to rewrite


def _int8_weights(model: onnx.ModelProto) -> list[np.ndarray]:
    return [numpy_helper.to_array(t) for t in model.graph.initializer if t.data_type == TensorProto.INT8]


def _within_7_bits(weights: list[np.ndarray]) -> bool:
    return all(int(np.abs(w).max()) <= 64 for w in weights)


def test_weights_use_7_bits_so_no_cpu_saturates_them(tmp_path):
    # Without VNNI, x86 adds pairs of uint8 x int8 products into int16 with
    # saturation: 2 x 255 x 64 = 32640 still fits, 2 x 255 x 127 does not.
    seven_bit = _int8_weights(_quantised_tiny(tmp_path, quantize.Recipe()))
    eight_bit = _int8_weights(_quantised_tiny(tmp_path, quantize.Recipe(reduce_range=False)))
    assert seven_bit and _within_7_bits(seven_bit)
    assert not _within_7_bits(eight_bit)


def test_the_shipped_model_has_7_bit_weights():
    assert MODEL_PATH.is_file(), "models/isnet-general-tiny.onnx is missing: run `make model`"
    weights = _int8_weights(onnx.load(MODEL_PATH))
    assert len(weights) > 100 and _within_7_bits(weights)


def test_folded_input_quantisation_gives_the_same_output(tmp_path):
    float_input = _quantised_tiny(tmp_path, quantize.Recipe(uint8_input=False))
    uint8_input = _quantised_tiny(tmp_path, quantize.Recipe())
    assert float_input.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert uint8_input.graph.input[0].type.tensor_type.elem_type == TensorProto.UINT8
    scale, zero_point = quantize.input_quantisation(uint8_input)
    assert 0 < scale < 1 and 0 <= zero_point <= 255
    assert quantize.input_quantisation(float_input) is None
    np.testing.assert_array_equal(_run(uint8_input, _batch()), _run(float_input, _batch()))
    used = {name for node in uint8_input.graph.node for name in node.input}
    assert all(t.name in used for t in uint8_input.graph.initializer)


def test_unfolding_the_input_quantisation_takes_floats_again_with_the_same_output(tmp_path):
    float_input = _quantised_tiny(tmp_path, quantize.Recipe(uint8_input=False))
    twin = _quantised_tiny(tmp_path, quantize.Recipe())
    assert quantize.unfold_input_quantisation(twin)
    assert twin.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert quantize.input_quantisation(twin) is None
    assert not quantize.unfold_input_quantisation(twin)  # already float: unchanged
    np.testing.assert_array_equal(_run(twin, _batch()), _run(float_input, _batch()))


def test_ranges_round_outwards_and_keep_zero():
    per_sample = np.array([[[0.5, 3.14159]], [[-0.1234, 2.0]]], dtype=np.float32)  # 2 samples, 1 tensor
    (low, high), = ranges.aggregate(per_sample, "max")
    assert low == pytest.approx(-0.124) and high == pytest.approx(3.15)
    (low, high), = ranges.aggregate(np.array([[[1.0, 2.0]]], np.float32), "max")
    assert low == 0.0  # a range must contain zero for uint8 zero points
    with pytest.raises(ValueError):
        ranges.aggregate(per_sample, "mean")


def test_subject_region_is_dilated_and_pooled():
    probability = np.zeros((32, 32), np.float32)
    probability[16, 16] = 0.9
    regions = ranges.subject_regions(probability, [32, 8])
    full, coarse = regions["calibration_region_32"][0, 0], regions["calibration_region_8"][0, 0]
    assert full[16, 14:19].all() and full.sum() == 25  # margin 32/16 = 2 px each side
    assert coarse[4, 4] == 1 and coarse.sum() < 8
    assert not ranges.subject_regions(np.zeros((32, 32), np.float32), [32])["calibration_region_32"].any()


def test_collect_gives_each_tensors_range_as_a_plain_run_has_it(tmp_path):
    """Per sample and tensor, the min and max the tensor takes (whole image),
    with each tensor's reductions next to its producer so that activations
    are freed as in a plain run, not all kept to the end."""
    model = convert.prepare_fp32(tiny_fp16_isnet())
    path = tmp_path / "fp32.onnx"
    onnx.save(model, path)
    tensors = ranges.float_tensors(model, quantize.static_nodes(model, quantize.Recipe()))
    samples = [_batch(), -_batch()]
    table = ranges.collect(path, tensors, samples, whole_image=True)
    exposed = onnx.shape_inference.infer_shapes(model)
    exposed.graph.output.extend(v for v in exposed.graph.value_info if v.name in tensors)
    session = ort.InferenceSession(exposed.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    for sample, row in zip(samples, table):
        values = dict(zip(names, session.run(None, {"input": sample})))
        values["input"] = sample
        wanted = np.array([[values[name].min(), values[name].max()] for name in tensors])
        np.testing.assert_allclose(row, wanted, rtol=1e-5, atol=1e-6)
    augmented, _ = ranges._with_reductions(model, tensors)
    order = [node.name for node in augmented.graph.node]
    producers = {out: node.name for node in augmented.graph.node for out in node.output}
    for index, name in enumerate(tensors):
        start = order.index(producers[name]) + 1 if name in producers else 0
        between = order[start:order.index(f"range_{index}_masked")]
        assert all(node.startswith("range_") for node in between), (name, between)


def _chunked_resource(data: bytes, chunk_bytes: int) -> tuple[dict, dict]:
    chunks, files = [], {}
    for start in range(0, len(data), chunk_bytes):
        part = data[start:start + chunk_bytes]
        digest = hashlib.sha256(part).hexdigest()
        files[digest] = part
        chunks.append({"hash": digest, "offsets": [start, start + len(part)]})
    return {"/models/medium": {"chunks": chunks[::-1], "size": len(data)}}, files


def test_reassemble_joins_chunks_in_offset_order():
    data = bytes(range(256)) * 10
    resources, files = _chunked_resource(data, 1000)
    assert source.reassemble(resources, files.__getitem__) == data


def test_reassemble_refuses_a_chunk_with_a_bad_sha256():
    resources, files = _chunked_resource(bytes(range(256)) * 10, 1000)
    victim = resources["/models/medium"]["chunks"][0]["hash"]
    files[victim] = b"x" + files[victim][1:]
    with pytest.raises(source.SourceError, match="sha256"):
        source.reassemble(resources, files.__getitem__)


def test_reassemble_refuses_a_wrong_total_size():
    resources, files = _chunked_resource(bytes(100), 30)
    resources["/models/medium"]["size"] = 101
    with pytest.raises(source.SourceError, match="expected 101"):
        source.reassemble(resources, files.__getitem__)


def test_cache_dir_honours_xdg_cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert source.cache_dir() == tmp_path / "isnet-wsgi"


def test_manifest_names_the_file_and_its_interface(tmp_path):
    model_path = tmp_path / "isnet-general-tiny.onnx"
    model_path.write_bytes(b"not really a model")
    src = source.Source(model_path, "ab" * 32, {"kind": "file", "name": "x.onnx"})
    manifest = make_manifest(src, quantize.Recipe().describe(), model_path, "key", {"static_nodes": 1})
    assert manifest["sha256"] == hashlib.sha256(b"not really a model").hexdigest()
    assert manifest["size_bytes"] == len(b"not really a model")
    assert manifest["input"]["name"] == "input" and manifest["input"]["shape"] == [1, 3, 1024, 1024]
    # What the service reads back is rembg's preprocessing, the calibration's too.
    read = ModelInput.from_manifest(manifest)
    assert (read.resize, read.divide_by, read.mean, read.std) == ("LANCZOS", "image_max", (0.5,) * 3, (1.0,) * 3)
    assert manifest["input"]["dtype"] == "float32" and "quantisation" not in manifest["input"]
    assert manifest["source"]["kind"] == "file" and "MIT" in manifest["licence"]["weights"]
    path = tmp_path / "manifest.json"
    write_manifest(manifest, path)
    assert json.loads(path.read_text()) == manifest
    assert build.is_up_to_date(manifest, "key", model_path)
    assert not build.is_up_to_date(manifest, "other key", model_path)
    model_path.write_bytes(b"tampered")
    assert not build.is_up_to_date(manifest, "key", model_path)


def test_manifest_gives_the_input_quantisation_the_server_needs(tmp_path):
    model_path = tmp_path / "isnet-general-tiny.onnx"
    model_path.write_bytes(b"model")
    src = source.Source(model_path, "ab" * 32, {"kind": "file", "name": "x.onnx"})
    facts = {"input_quantisation": {"scale": 0.0039, "zero_point": 127}}
    manifest = make_manifest(src, quantize.Recipe().describe(), model_path, "key", facts)
    assert manifest["input"]["dtype"] == "uint8"
    assert manifest["input"]["quantisation"]["scale"] == 0.0039
    assert manifest["input"]["quantisation"]["zero_point"] == 127
    assert "input_quantisation" not in manifest["quantisation"]


def _dq_resize_q(graph_nodes, initializers, name, source_q, factor):
    """DequantizeLinear -> bilinear Resize (x factor) -> QuantizeLinear, as the quantiser emits."""
    scales = numpy_helper.from_array(np.array([1, 1, factor, factor], np.float32), f"{name}_scales")
    initializers.append(scales)
    graph_nodes += [
        helper.make_node("DequantizeLinear", [source_q, "s", "z"], [f"{name}_dq"], name=f"{name}/dq"),
        helper.make_node("Resize", [f"{name}_dq", "", scales.name], [f"{name}_r"], mode="linear", name=f"{name}/Resize"),
        helper.make_node("QuantizeLinear", [f"{name}_r", "s", "z"], [f"{name}_q"], name=f"{name}/q"),
        helper.make_node("DequantizeLinear", [f"{name}_q", "s", "z"], [f"{name}_out"], name=f"{name}/out"),
    ]
    return helper.make_tensor_value_info(f"{name}_out", TensorProto.FLOAT, None)


def test_resizes_run_on_uint8_except_those_kept_float_by_output_side():
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"], name="q_in")]
    initializers = [numpy_helper.from_array(np.array(0.1, np.float32), "s"),
                    numpy_helper.from_array(np.array(128, np.uint8), "z")]
    outputs = [_dq_resize_q(nodes, initializers, "small", "xq", 2), _dq_resize_q(nodes, initializers, "large", "xq", 8)]
    graph = helper.make_graph(nodes, "resizes", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])],
                              outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = np.linspace(-5, 5, 16, dtype=np.float32).reshape(1, 1, 4, 4)
    before = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})

    assert rewrites.resize_in_uint8(model, float_max_side_px=8) == 1  # 4 -> 8 stays float, 4 -> 32 is rewritten
    kept = {n.name: [i for i in n.input] for n in model.graph.node if n.op_type == "Resize"}
    assert kept["small/Resize"][0] == "small_dq" and kept["large/Resize"][0] == "xq"
    after = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    np.testing.assert_array_equal(after[0], before[0])
    assert np.abs(after[1] - before[1]).max() <= 0.1 + 1e-6  # within one quantisation step
