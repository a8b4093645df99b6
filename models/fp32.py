"""The fp32 reference model: the npm package's fp16 ISNet widened to fp32.

Made once per source and cached by the source's and convert.py's sha256
(the tests and models/reference.py use it as the fidelity reference, and
the build quantises it).
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

from models import convert, source
from models.manifest import MODELS_DIR


def fp32_reference(src: source.Source, cache: Path) -> Path:
    """The single-output fp32 graph of `src`, cached by source sha256."""
    import onnx

    key = hashlib.sha256(f"{src.sha256}:{source.sha256_file(MODELS_DIR / 'convert.py')}".encode()).hexdigest()
    path = cache / f"{key}-fp32.onnx"
    if not path.is_file():
        model = convert.prepare_fp32(onnx.load(src.path))
        with tempfile.NamedTemporaryFile(dir=cache, suffix=".part", delete=False) as stream:
            onnx.save(model, stream.name)
        source.publish(Path(stream.name), path)
    return path


def fp32_model_path() -> Path:
    """The fp32 model of the npm source, from the build's cache (made by
    `make model`; no download when the npm tarball is cached)."""
    cache = source.cache_dir()
    return fp32_reference(source.npm_model(cache), cache)
