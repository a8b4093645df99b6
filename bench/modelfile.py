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
from isnet_wsgi.model.segmenter import ModelInput
from models.source import sha256_file as sha256  # stdlib only, like the bench


def model_input(model_path: Path) -> ModelInput:
    """What the model takes, from its manifest; ISNet's defaults without one."""
    try:
        manifest = json.loads(model_path.with_suffix(".json").read_text())
    except (OSError, ValueError):
        manifest = {}
    return ModelInput.from_manifest(manifest if isinstance(manifest, dict) else {})


def float_input_twin(model_path: Path, scratch: Path) -> Path:
    """The same network taking float32 input, for a server that feeds floats.

    Our build folds the model's first QuantizeLinear into the service's
    preprocessing (models/quantize.py, fold_input_quantisation). rembg feeds
    x/255 - mean as float32, so it gets the file with that one node put back
    (quantize.unfold_input_quantisation).
    """
    if model_input(model_path).quantisation is None:
        return model_path
    import onnx

    from models.quantize import unfold_input_quantisation

    model = onnx.load(str(model_path))
    unfold_input_quantisation(model)
    twin = scratch / "float-input" / model_path.name
    twin.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(twin))
    return twin


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
    wanted = model_input(model_path)
    linked = scratch / "model" / model_path.name
    linked.parent.mkdir(parents=True, exist_ok=True)
    if not linked.exists():
        linked.symlink_to(model_path)
    linked.with_suffix(".json").write_text(json.dumps({
        **manifest, "name": manifest.get("model", model_path.stem), "sha256": digest,
        "input": {**manifest.get("input", {}), "normalisation": {"mean": list(wanted.mean), "std": list(wanted.std)}},
        "note": "written by bench/modelfile.py for a benchmark run"}))
    return linked


def default_model() -> Path:
    return DEFAULT_MODEL_PATH
