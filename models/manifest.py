"""Where the model build's files are, and the manifest it writes beside the model.

The manifest (models/isnet-general-tiny.json) is what a deployer and the
server read about the built file: its sha256 and size, the input the
server must feed (isnet_wsgi/model/segmenter.py ModelInput reads it), how
the output becomes a mask, the recipe, the calibration photos and the
licences. Paths of the hard set (calibration and held-out photos, the
reference masks) are named here once.
"""

from __future__ import annotations

import json
from pathlib import Path

from isnet_wsgi.model.segmenter import INPUT_SIZE_PX
from models import source

MODELS_DIR = Path(__file__).resolve().parent
MODEL_PATH = MODELS_DIR / "isnet-general-tiny.onnx"
MANIFEST_PATH = MODELS_DIR / "isnet-general-tiny.json"
COMPOSITES_DIR = MODELS_DIR / "calibration"  # the first calibration set's sources (calibrate.py)
HARDSET_DIR = MODELS_DIR / "hardset"
HARDSET_CALIBRATION_DIR = HARDSET_DIR / "calibration"
HELD_OUT_DIR = HARDSET_DIR / "held-out"
REFERENCE_DIR = HARDSET_DIR / "reference"
INPUT_SHAPE = [1, 3, INPUT_SIZE_PX, INPUT_SIZE_PX]
OUTPUT_SHAPE = [1, 1, INPUT_SIZE_PX, INPUT_SIZE_PX]
LICENCE_NOTES = {
    "weights": "ISNet (DIS project, github.com/xuebinqin/DIS), MIT licence, as listed in the "
    "npm package's ThirdPartyLicenses.json.",
    "npm_package": "@imgly/background-removal-data is AGPL-3.0 as a package; we use only the "
    "model file from it, not its code. To stay clear of the AGPL entirely, build from the DIS "
    "project's own isnet-general-use weights with --from.",
    "calibration_photos": "models/hardset/LICENSES.md",
}


def photos(directory: Path) -> list[Path]:
    """The photos of a hard-set folder, in a fixed order."""
    return sorted(directory.glob("*.jpg"))


def calibration_photos() -> list[Path]:
    """The build's calibration photos, in a fixed order."""
    return photos(HARDSET_CALIBRATION_DIR)


def calibration_digests() -> dict[str, str]:
    return {p.name: source.sha256_file(p) for p in calibration_photos()}


def read_manifest(path: Path = MANIFEST_PATH) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def write_manifest(manifest: dict, path: Path = MANIFEST_PATH) -> None:
    path.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")


def make_manifest(src: source.Source, recipe: dict, model_path: Path, key: str, facts: dict) -> dict:
    """Everything a deployer or the server needs to know about the built file;
    `recipe` is the recipe's description (quantize.Recipe.describe)."""
    import onnx
    import onnxruntime

    return {
        "model": "isnet-general-tiny",
        "file": model_path.name,
        "sha256": source.sha256_file(model_path),
        "size_bytes": model_path.stat().st_size,
        "source": src.description,
        "input": model_input(facts.pop("input_quantisation", None)),
        "output": {"name": "output", "shape": OUTPUT_SHAPE,
                   "postprocess": "min-max normalise to [0, 1] (range floored at an epsilon), times 255 "
                                  "truncated to uint8, LANCZOS resize to the image's size"},
        "quantisation": {**recipe, **facts},
        "calibration": {"folder": "models/hardset/calibration", "images": calibration_digests(),
                        "preprocessing": "rembg's (models/reference.py reference_input)"},
        "build": {"key": key, "onnxruntime": onnxruntime.__version__, "onnx": onnx.__version__},
        "licence": LICENCE_NOTES,
    }


def model_input(quantisation: dict | None) -> dict:
    """The input the server feeds: float32 pixels, or those pixels quantised
    to uint8 by the caller when the build folded the first QuantizeLinear."""
    described = {
        "name": "input", "shape": INPUT_SHAPE, "dtype": "float32", "layout": "NCHW", "colour": "RGB",
        "resize": "LANCZOS",
        "normalisation": {"formula": "x/max(x) - 0.5, max over the resized image's RGB values",
                          "divide_by": "image_max", "mean": [0.5, 0.5, 0.5], "std": [1.0, 1.0, 1.0]},
    }
    if quantisation is not None:
        described["dtype"] = "uint8"
        described["quantisation"] = {
            **quantisation,
            "formula": "q = clip(round(((x/max(x) - mean) / std) / scale) + zero_point, 0, 255), "
                       "rounding half to even, as onnxruntime's QuantizeLinear"}
    return described


def variant_manifest(model_path: Path, input_quantisation: dict | None) -> dict:
    """The part of a manifest the service reads, for a model built elsewhere."""
    return {"model": model_path.stem, "sha256": source.sha256_file(model_path),
            "input": model_input(input_quantisation)}
