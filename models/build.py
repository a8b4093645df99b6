"""Build models/isnet-general-tiny.onnx and its manifest: `python -m models.build`.

Steps: obtain ISNet (npm package, or --from PATH), convert it to a single-
output fp32 graph (cached: the tests use it as the fidelity reference),
quantise it (quantize.py) with ranges calibrated on models/hardset/calibration/,
and write the model and models/isnet-general-tiny.json.

The build is deterministic: the same source, calibration photos and code give
the same bytes, so the committed manifest names the sha256 a clean build
produces. A build whose inputs match the manifest and whose model file is
intact is a no-op. `--measure` adds peak RSS, latency and fidelity figures.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path

import onnx
import onnxruntime

from models import calibrate, convert, quantize, source

MODELS_DIR = Path(__file__).resolve().parent
MODEL_PATH = MODELS_DIR / "isnet-general-tiny.onnx"
MANIFEST_PATH = MODELS_DIR / "isnet-general-tiny.json"
INPUT_SHAPE = [1, 3, calibrate.INPUT_SIZE_PX, calibrate.INPUT_SIZE_PX]
OUTPUT_SHAPE = [1, 1, calibrate.INPUT_SIZE_PX, calibrate.INPUT_SIZE_PX]
# Files whose content decides the output bytes; their hashes form the build key.
BUILD_CODE = ("convert.py", "quantize.py", "ranges.py", "calibrate.py", "reference.py")
LICENCE_NOTES = {
    "weights": "ISNet (DIS project, github.com/xuebinqin/DIS), MIT licence, as listed in the "
    "npm package's ThirdPartyLicenses.json.",
    "npm_package": "@imgly/background-removal-data is AGPL-3.0 as a package; we use only the "
    "model file from it, not its code. To stay clear of the AGPL entirely, build from the DIS "
    "project's own isnet-general-use weights with --from.",
    "calibration_photos": "models/hardset/LICENSES.md",
}


def fp32_reference(src: source.Source, cache: Path) -> Path:
    """The single-output fp32 graph of `src`, cached by source sha256."""
    key = hashlib.sha256(f"{src.sha256}:{source.sha256_file(MODELS_DIR / 'convert.py')}".encode()).hexdigest()
    path = cache / f"{key}-fp32.onnx"
    if not path.is_file():
        model = convert.prepare_fp32(onnx.load(src.path))
        with tempfile.NamedTemporaryFile(dir=cache, suffix=".part", delete=False) as stream:
            onnx.save(model, stream.name)
        source.publish(Path(stream.name), path)
    return path


def calibration_digests() -> dict[str, str]:
    return {p.name: source.sha256_file(p) for p in calibrate.calibration_photos()}


def build_key(src: source.Source, recipe: quantize.Recipe) -> str:
    """Hash of everything the output bytes depend on."""
    parts = {
        "source": src.sha256,
        "recipe": recipe.describe(),
        "calibration": calibration_digests(),
        "code": {name: source.sha256_file(MODELS_DIR / name) for name in BUILD_CODE},
        "onnxruntime": onnxruntime.__version__,
        "onnx": onnx.__version__,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def read_manifest(path: Path = MANIFEST_PATH) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def write_manifest(manifest: dict, path: Path = MANIFEST_PATH) -> None:
    path.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")


def make_manifest(src: source.Source, recipe: quantize.Recipe, model_path: Path, key: str, facts: dict) -> dict:
    """Everything a deployer or the server needs to know about the built file."""
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
        "quantisation": {**recipe.describe(), **facts},
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


def is_up_to_date(manifest: dict, key: str, model_path: Path = MODEL_PATH) -> bool:
    """The file exists, matches the manifest's sha256, and was built from these inputs."""
    if manifest.get("build", {}).get("key") != key or not model_path.is_file():
        return False
    return source.sha256_file(model_path) == manifest.get("sha256")


def build(src: source.Source, cache: Path, recipe: quantize.Recipe, force: bool = False) -> dict:
    """Build if needed; return the manifest (written to MANIFEST_PATH)."""
    previous = read_manifest()
    key = build_key(src, recipe)
    if not force and is_up_to_date(previous, key):
        print(f"models/{MODEL_PATH.name} is up to date (sha256 {previous['sha256'][:12]}…)")
        return previous
    started = time.perf_counter()
    reference = fp32_reference(src, cache)
    with tempfile.TemporaryDirectory(prefix="isnet-build-", dir=cache) as tmp:
        built = Path(tmp) / MODEL_PATH.name
        facts = quantize.quantize(reference, built, lambda: calibrate.calibration_inputs(), recipe)
        manifest = make_manifest(src, recipe, built, key, facts)
        source.copy_atomic(built, MODEL_PATH)
    _carry_over_measurements(previous, manifest)
    write_manifest(manifest)
    print(f"built models/{MODEL_PATH.name} in {time.perf_counter() - started:.0f} s, sha256 {manifest['sha256']}")
    if previous.get("sha256") and previous["sha256"] != manifest["sha256"]:
        print(f"warning: the previous manifest named sha256 {previous['sha256']}; the build is not "
              "reproducible here, or its inputs changed", file=sys.stderr)
    return manifest


def _carry_over_measurements(previous: dict, manifest: dict) -> None:
    """Measured figures belong to a file: keep them only for the same bytes."""
    if previous.get("sha256") == manifest["sha256"] and "measured" in previous:
        manifest["measured"] = previous["measured"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.build", description=__doc__.splitlines()[0])
    parser.add_argument("--from", dest="source_path", type=Path,
                        help="an ISNet ONNX file (fp16 or fp32) to use instead of the npm package")
    parser.add_argument("--force", action="store_true", help="rebuild even when up to date")
    parser.add_argument("--measure", action="store_true",
                        help="measure peak RSS, latency and fidelity and record them in the manifest")
    args = parser.parse_args(argv)
    cache = source.cache_dir()
    try:
        src = source.user_model(args.source_path) if args.source_path else source.npm_model(cache)
    except source.SourceError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    manifest = build(src, cache, quantize.Recipe(), force=args.force)
    if args.measure:
        from models import report

        manifest["measured"] = report.measure_all(MODEL_PATH, fp32_reference(src, cache))
        write_manifest(manifest)
        print(json.dumps(manifest["measured"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
