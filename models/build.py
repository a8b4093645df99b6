"""Build models/isnet-general-tiny.onnx and its manifest: `python -m models.build`.

Steps: obtain ISNet (npm package, or --from PATH), convert it to a single-
output fp32 graph (cached: the tests use it as the fidelity reference),
quantise it (quantize.py) with ranges calibrated on models/hardset/calibration/,
and write the model and models/isnet-general-tiny.json.

The build is deterministic: the same source, calibration photos and code give
the same bytes, so the committed manifest names the sha256 a clean build
produces. A build whose inputs match the manifest and whose model file is
intact is a no-op. `--check` builds into a scratch folder and fails unless
the bytes reproduce the manifest's sha256; `--measure` adds peak RSS,
latency and fidelity figures.
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


def quantised_file(src: source.Source, cache: Path, recipe: quantize.Recipe, folder: Path,
                   progress: bool = False) -> tuple[Path, dict]:
    """Quantise `src` into `folder`; returns the file and the build's facts."""
    built = folder / MODEL_PATH.name
    inputs = _reported(calibrate.calibration_inputs) if progress else calibrate.calibration_inputs
    facts = quantize.quantize(fp32_reference(src, cache), built, inputs, recipe)
    return built, facts


def _reported(calibration_inputs):
    """The calibration inputs, a line printed as each photo goes through: the
    build's minutes are these passes, and a new user should see them move."""
    def inputs():
        total = len(calibration_digests())
        for number, tensor in enumerate(calibration_inputs(), 1):
            print(f"  calibration photo {number} of {total}", flush=True)
            yield tensor
    return inputs


def build(src: source.Source, cache: Path, recipe: quantize.Recipe, force: bool = False) -> dict:
    """Build if needed; return the manifest (written to MANIFEST_PATH)."""
    previous = read_manifest()
    key = build_key(src, recipe)
    if not force and is_up_to_date(previous, key):
        print(f"models/{MODEL_PATH.name} is up to date (sha256 {previous['sha256'][:12]}…)")
        return previous
    started = time.perf_counter()
    print(f"building models/{MODEL_PATH.name}: {len(calibration_digests())} calibration photos, "
          "two runs each, then quantisation (a few minutes)", flush=True)
    with tempfile.TemporaryDirectory(prefix="isnet-build-", dir=cache) as tmp:
        built, facts = quantised_file(src, cache, recipe, Path(tmp), progress=True)
        manifest = make_manifest(src, recipe.describe(), built, key, facts)
        source.copy_atomic(built, MODEL_PATH)
    _carry_over_measurements(previous, manifest)
    write_manifest(manifest)
    print(f"built models/{MODEL_PATH.name} in {time.perf_counter() - started:.0f} s, sha256 {manifest['sha256']}")
    if previous.get("build", {}).get("key") == key and previous.get("sha256") != manifest["sha256"]:
        print(f"warning: not reproducible here: the committed manifest was built from the same inputs "
              f"and names sha256 {previous.get('sha256')}", file=sys.stderr)
    elif previous.get("sha256") and previous["sha256"] != manifest["sha256"]:
        print(f"note: the inputs changed; the previous manifest named sha256 {previous['sha256']}: "
              "commit the new manifest with the model's recipe", file=sys.stderr)
    return manifest


def check(src: source.Source, cache: Path, recipe: quantize.Recipe) -> int:
    """Build into a scratch folder and compare with the committed manifest:
    0 when the same inputs give the same sha256, 1 otherwise. models/ is not touched."""
    committed = read_manifest()
    key = build_key(src, recipe)
    if committed.get("build", {}).get("key") != key:
        print("error: the committed manifest was built from other inputs (code, photos, recipe or "
              "onnxruntime/onnx versions); rebuild with `python -m models.build` and commit it", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="isnet-check-", dir=cache) as tmp:
        built, _ = quantised_file(src, cache, recipe, Path(tmp))
        sha256 = source.sha256_file(built)
    if sha256 != committed.get("sha256"):
        print(f"error: not reproducible: built sha256 {sha256}, the manifest names {committed.get('sha256')}",
              file=sys.stderr)
        return 1
    print(f"reproduced: sha256 {sha256}")
    return 0


def _carry_over_measurements(previous: dict, manifest: dict) -> None:
    """Measured figures belong to a file: keep them only for the same bytes."""
    if previous.get("sha256") == manifest["sha256"] and "measured" in previous:
        manifest["measured"] = previous["measured"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.build", description=__doc__.splitlines()[0])
    parser.add_argument("--from", dest="source_path", type=Path,
                        help="an ISNet ONNX file (fp16 or fp32) to use instead of the npm package")
    parser.add_argument("--force", action="store_true", help="rebuild even when up to date")
    parser.add_argument("--check", action="store_true",
                        help="build into a scratch folder and fail unless it reproduces the manifest's sha256")
    parser.add_argument("--measure", action="store_true",
                        help="measure peak RSS, latency and fidelity and record them in the manifest")
    args = parser.parse_args(argv)
    cache = source.cache_dir()
    try:
        src = source.user_model(args.source_path) if args.source_path else source.npm_model(cache)
    except source.SourceError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if args.check:
        return check(src, cache, quantize.Recipe())
    manifest = build(src, cache, quantize.Recipe(), force=args.force)
    if args.measure:
        from models import report

        manifest["measured"] = report.measure_all(MODEL_PATH)
        write_manifest(manifest)
        print(json.dumps(manifest["measured"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
