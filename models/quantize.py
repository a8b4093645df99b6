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
    range_aggregate: str = "max"
    per_channel: bool = True
    dynamic: bool = True
    extra_options: dict = field(default_factory=dict)

    def describe(self) -> dict:
        return {
            "static_uint8_qdq": {
                "node_prefixes": list(self.static_prefixes),
                "nodes": list(self.static_nodes),
                "op_types": list(self.static_op_types),
                "activations": "uint8 asymmetric",
                "weights": "int8 symmetric, " + ("per-channel" if self.per_channel else "per-tensor"),
                "calibration": "min/max of each tensor inside the subject region (fp32 mask >= "
                f"{ranges.REGION_THRESHOLD}, dilated by {ranges.REGION_MARGIN:.4f} of the side), "
                f"{self.range_aggregate} over samples",
            },
            "dynamic_uint8_weights": "every other Conv" if self.dynamic else "none",
            "kept_fp32": list(self.fp32_prefixes) + list(self.fp32_nodes),
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
    _normalise_metadata(out_path)
    return {"static_nodes": len(nodes), "dynamic_nodes": len(dynamic),
            "calibrated_tensors": len(tensors), "calibration_samples": int(table.shape[0])}


def _select(per_sample: tuple[list[str], np.ndarray], tensors: list[str]) -> np.ndarray:
    """The columns of a per-sample range table for `tensors`, in that order."""
    names, table = per_sample
    index = {name: i for i, name in enumerate(names)}
    missing = [name for name in tensors if name not in index]
    if missing:
        raise ValueError(f"no calibration ranges for {len(missing)} tensors, e.g. {missing[0]}")
    return table[:, [index[name] for name in tensors], :]


def _normalise_metadata(path: Path) -> None:
    """Fix the fields that would otherwise name the tool versions that ran."""
    model = onnx.load(path)
    model.producer_name = "isnet-wsgi models.build"
    model.producer_version = ""
    del model.metadata_props[:]
    onnx.save(model, path)
