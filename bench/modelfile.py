"""Which ONNX file the bench measures, and a manifest the service will accept for it.

By default the service's own model (models/isnet-general-tiny.onnx, built by
`make model`) with its committed manifest. `--model other.onnx` benchmarks
another file: the service refuses a model without a matching manifest, so the
bench links the file into a scratch folder next to a manifest it writes.
"""

from __future__ import annotations

import json
from pathlib import Path

from isnet_wsgi.config import DEFAULT_MODEL_PATH
from models.source import sha256_file as sha256  # stdlib only, like the bench


def normalisation(model_path: Path):
    """(mean, std) from the model's manifest, each one number or one per RGB
    channel, as isnet_wsgi.imaging.to_tensor takes them; ISNet's without one."""
    try:
        manifest = json.loads(model_path.with_suffix(".json").read_text())
        norm = manifest.get("input", {}).get("normalisation", {})
        return _channels(norm.get("mean", 0.5)), _channels(norm.get("std", 1.0))
    except (OSError, ValueError, AttributeError):
        return 0.5, 1.0


def input_quantisation(model_path: Path):
    """(scale, zero point) when the model takes uint8 input, from its manifest."""
    try:
        manifest = json.loads(model_path.with_suffix(".json").read_text())
        given = manifest.get("input", {}).get("quantisation")
        return (float(given["scale"]), int(given["zero_point"])) if given else None
    except (OSError, ValueError, AttributeError, KeyError, TypeError):
        return None


def float_input_twin(model_path: Path, scratch: Path) -> Path:
    """The same network taking float32 input, for a server that feeds floats.

    Our build folds the model's first QuantizeLinear into the service's
    preprocessing (models/quantize.py, fold_input_quantisation). rembg feeds
    x/255 - mean as float32, so it gets the file with that one node put back
    (quantize.unfold_input_quantisation).
    """
    if input_quantisation(model_path) is None:
        return model_path
    import onnx

    from models.quantize import unfold_input_quantisation

    model = onnx.load(str(model_path))
    unfold_input_quantisation(model)
    twin = scratch / "float-input" / model_path.name
    twin.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(twin))
    return twin


def _channels(value):
    return tuple(float(v) for v in value) if isinstance(value, list) else float(value)


def servable(model_path: Path, scratch: Path) -> Path:
    """A MODEL_PATH for the service: the file itself when its manifest matches,
    else a link to it in `scratch` with a manifest written for it."""
    model_path = model_path.resolve()
    digest = sha256(model_path)
    try:
        manifest = json.loads(model_path.with_suffix(".json").read_text())
    except (OSError, ValueError):
        manifest = {}
    manifest = manifest if isinstance(manifest, dict) else {}
    if manifest.get("sha256") == digest:
        return model_path
    mean, std = normalisation(model_path)
    linked = scratch / "model" / model_path.name
    linked.parent.mkdir(parents=True, exist_ok=True)
    if not linked.exists():
        linked.symlink_to(model_path)
    linked.with_suffix(".json").write_text(json.dumps({
        **manifest, "name": manifest.get("model", model_path.stem), "sha256": digest,
        "input": {**manifest.get("input", {}), "normalisation": {"mean": mean, "std": std}},
        "note": "written by bench/modelfile.py for a benchmark run"}))
    return linked


def default_model() -> Path:
    return DEFAULT_MODEL_PATH
