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

from models import calibrate, quantize, source
from models.fp32 import fp32_reference
from models.manifest import (
    MODEL_PATH,
    MODELS_DIR,
    calibration_digests,
    make_manifest,
    read_manifest,
    write_manifest,
)

# Files whose content decides the output bytes; their hashes form the build key.
BUILD_CODE = ("convert.py", "quantize.py", "rewrites.py", "ranges.py", "calibrate.py", "reference.py")


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
        manifest = make_manifest(src, recipe.describe(), built, key, facts)
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

        manifest["measured"] = report.measure_all(MODEL_PATH)
        write_manifest(manifest)
        print(json.dumps(manifest["measured"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
