"""Where the int8 model's activations part from fp32's: `python -m models.sensitivity`.

For each quantised Conv of a model (default: the built one), the SNR of its
activation against the fp32 model's, on every other calibration photo: the
Conv output clipped to the range its QuantizeLinear keeps (the ReLU folded
in), against the fp32 Conv output clipped the same way, so that the range
chosen is part of the error and clipping the fp32 model never does is not
counted twice. Each activation carries the error of everything before it
(onnxruntime.quantization.qdq_loss_debug's compute_activation_error would
hold every activation of a 1024-px run at once, GBs per photo; this runs
one stage's at a time). Not part of `make test`: a few minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import onnx

from models import calibrate, probe, quantize, source
from models.manifest import MODEL_PATH, calibration_photos


def activation_snr(model_path: Path, fp32_path: Path, inputs: Iterable[np.ndarray] | None = None,
                   threads: int = 2) -> list[dict]:
    """One row per quantised Conv, in graph order: node, stage and SNR in dB."""
    quantised = onnx.load(model_path)
    quantize.unfold_input_quantisation(quantised)  # fed the fp32 model's input
    fp32 = onnx.load(fp32_path)
    tensors = list(inputs if inputs is not None else calibrate.calibration_inputs(calibration_photos()[::2]))
    rows = []
    for stage in probe.stages(quantised, fp32):
        signal, noise = np.zeros(len(stage.convs)), np.zeros(len(stage.convs))
        for wanted, got in probe.activations(stage, quantised, fp32, tensors, threads):
            for index, ((low, high), fp, q) in enumerate(zip(stage.ranges, wanted, got)):
                fp = np.clip(fp, low, high, dtype=np.float64)
                signal[index] += np.square(fp).sum()
                noise[index] += np.square(fp - np.clip(q, low, high)).sum()
        for node, s, n in zip(stage.convs, signal, noise):
            rows.append({"node": node.name, "stage": stage.name,
                         "snr_db": round(float(10 * np.log10(s / max(n, 1e-30))), 2)})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.sensitivity", description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", type=Path, default=MODEL_PATH)
    parser.add_argument("--fp32", type=Path, help="the fp32 graph it was quantised from "
                        "(default: the build's, pre-processed by models.trial)")
    parser.add_argument("--worst", type=int, default=15, help="how many of the lowest to list")
    args = parser.parse_args(argv)
    folder = source.cache_dir()
    rows = activation_snr(args.model, args.fp32 or folder / "trial-pre.onnx")
    print("| Conv | SNR, dB |\n|---|---|")
    for row in sorted(rows, key=lambda row: row["snr_db"])[:args.worst]:
        print(f"| `{row['node']}` | {row['snr_db']:.1f} |")
    print("\n| stage | lowest SNR, dB | median SNR, dB |\n|---|---|---|")
    for stage in dict.fromkeys(row["stage"] for row in rows):
        values = [row["snr_db"] for row in rows if row["stage"] == stage]
        print(f"| {stage} | {min(values):.1f} | {float(np.median(values)):.1f} |")
    (folder / "sensitivity.json").write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
