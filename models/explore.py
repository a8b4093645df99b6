"""Reproduce the recipe comparison in models/README.md: `python -m models.explore`.

Each variant is built from the cached fp32 reference (run `make model` first),
then measured like the service runs it (peak RSS in a fresh process) and
compared with fp32 on the held-out images. Calibration runs are shared:
per-sample ranges are collected once per calibration set for every tensor of
the static op types, and each variant picks its columns. Takes ~2 minutes
per variant on 2 cores. Not part of `make test`.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from PIL import Image, ImageOps

from models import (
    calibrate,
    footprint,
    measure,
    quantize,
    ranges,
    reference,
    report,
    source,
)
from models.fp32 import fp32_reference
from models.manifest import COMPOSITES_DIR

NO_SUBJECT_PHOTO = Path(__file__).resolve().parent.parent / "tests" / "data" / "hubble_deep_field.jpg"
STAGE2 = ("/stage2/", "/stage2d/", "/pool12/")
STAGE3 = ("/stage3/", "/stage3d/", "/pool23/")
HIGH_RES = {"static_prefixes": quantize.HIGH_RES_PREFIXES, "static_nodes": quantize.HIGH_RES_NODES}


@dataclass(frozen=True)
class Variant:
    recipe: quantize.Recipe
    calibration: str = "subject"  # key of CALIBRATION_SETS
    note: str = ""


def _photos_and_textures():
    """The first calibration set tried: photos and bare textures, mirrored and cropped."""
    directory = COMPOSITES_DIR
    for name in ("camera.png", "brick.png", "grass.png", "gravel.png"):
        with Image.open(directory / name) as photo:
            photo.load()
        yield photo
        yield ImageOps.mirror(photo)
        yield calibrate._centre_crop(photo, 0.7)


# name -> (images, measure whole image?, image -> model input)
CALIBRATION_SETS = {
    "subject": (lambda: (image for _, image in calibrate.camera_composites()), False, reference.reference_input),
    "textures-minmax": (_photos_and_textures, True, reference.reference_input),
}
# Smaller sets are rows of the full one: (set, sample indices in camera_composites order).
SUBSETS = {
    "subject-3": ("subject", [0, 1, 2]),  # the camera photo, mirrored, cropped
    "subject-7": ("subject", [0, 3, 5, 6, 7, 11, 13]),  # one of each kind of composite
}

# The comparison was made before the two graph rewrites (uint8 Resize, head in
# channel groups) existed; those rows keep them off, the last two add them.
BEFORE = {"uint8_resize": False, "head_parts": 1}
STAGE2_NODES = ("/Concat_7", "/Resize_3")
STAGE3_NODES = ("/Concat_5", "/Resize_2")

VARIANTS = {
    "issue recipe, plain MinMax on photos+textures": Variant(
        quantize.Recipe(**HIGH_RES, **BEFORE), "textures-minmax", "high-res static, rest dynamic"),
    "issue recipe": Variant(quantize.Recipe(**HIGH_RES, **BEFORE), note="high-res static, rest dynamic"),
    "issue recipe, no dynamic part": Variant(quantize.Recipe(**HIGH_RES, dynamic=False, **BEFORE)),
    "static to 256 px, rest dynamic": Variant(quantize.Recipe(
        static_prefixes=quantize.HIGH_RES_PREFIXES + STAGE2, static_nodes=quantize.HIGH_RES_NODES + STAGE2_NODES,
        **BEFORE)),
    "static to 128 px, rest dynamic": Variant(quantize.Recipe(
        static_prefixes=quantize.HIGH_RES_PREFIXES + STAGE2 + STAGE3,
        static_nodes=quantize.HIGH_RES_NODES + STAGE2_NODES + STAGE3_NODES, **BEFORE)),
    "all static": Variant(quantize.Recipe(**BEFORE)),
    "all static, plain MinMax on photos+textures": Variant(quantize.Recipe(**BEFORE), "textures-minmax"),
    "all static, per-tensor weights": Variant(quantize.Recipe(per_channel=False, **BEFORE)),
    "all static, /side1 quantised too": Variant(quantize.Recipe(fp32_prefixes=(), **BEFORE)),
    "all static, median over samples": Variant(quantize.Recipe(range_aggregate="median", **BEFORE)),
    "all static, 3 samples": Variant(quantize.Recipe(**BEFORE), "subject-3"),
    "all static, 7 samples": Variant(quantize.Recipe(**BEFORE), "subject-7"),
    "all static + bilinear Resize on uint8": Variant(quantize.Recipe(head_parts=1)),
    "all static + uint8 Resize + head in 4 groups (default)": Variant(quantize.Recipe()),
}


@dataclass
class Workbench:
    reference: Path
    cache: Path
    tables: dict = field(default_factory=dict)

    def per_sample(self, calibration: str) -> tuple[list[str], np.ndarray]:
        """Per-sample ranges of every static-op tensor, collected once per set."""
        if calibration in SUBSETS:
            parent, rows = SUBSETS[calibration]
            tensors, table = self.per_sample(parent)
            return tensors, table[rows]
        if calibration not in self.tables:
            images, whole_image, to_input = CALIBRATION_SETS[calibration]
            pre = self.cache / "explore-pre.onnx"
            if not pre.is_file():
                quantize.preprocess(self.reference, pre)
            model = onnx.load(pre)
            nodes = [n.name for n in model.graph.node if n.op_type in quantize.STATIC_OP_TYPES]
            tensors = ranges.float_tensors(model, nodes)
            made_by = f"{to_input.__module__}.{to_input.__qualname__}"
            key = hashlib.sha256(f"{self.reference.name}:{calibration}:{made_by}".encode()).hexdigest()[:16]
            path = self.cache / f"explore-{key}.npz"
            if not path.is_file():
                table = ranges.collect(pre, tensors, (to_input(i) for i in images()),
                                       whole_image=whole_image)
                np.savez(path, table=table, tensors=np.array(tensors))
            saved = np.load(path)
            if list(saved["tensors"]) != tensors:
                raise RuntimeError(f"{path} was collected for other tensors; delete it")
            self.tables[calibration] = (tensors, saved["table"])
        return self.tables[calibration]


def evaluate(bench: Workbench, name: str, variant: Variant) -> dict:
    out = bench.cache / "explore-variant.onnx"
    quantize.quantize(bench.reference, out, lambda: iter(()), variant.recipe, bench.per_sample(variant.calibration))
    memory = footprint.peak_rss(out, report.PHOTOS_DIR / report.HELD_OUT[0], runs=2)
    held_out = report.fidelity(out, bench.reference)
    fp32, session = measure.open_session(bench.reference), measure.open_session(out)
    batch = reference.reference_input(report.load_rgb(NO_SUBJECT_PHOTO))
    no_subject = measure.mask_iou(measure.predict_mask(session, batch), measure.predict_mask(fp32, batch))
    return {"name": name, "peak_rss_mb": memory["peak_rss_mb"], "latency_s": memory["run_s"],
            "iou_min": min(row["iou_vs_fp32"] for row in held_out.values()),
            "iou_no_subject": round(no_subject, 4), "note": variant.note}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.explore", description=__doc__.splitlines()[0])
    parser.add_argument("variants", nargs="*", help=f"names from: {', '.join(VARIANTS)}")
    args = parser.parse_args(argv)
    cache = source.cache_dir()
    bench = Workbench(fp32_reference(source.npm_model(cache), cache), cache)
    print("| variant | peak RSS MB | latency s | min IoU held-out | IoU hubble (no subject) |")
    print("|---|---|---|---|---|")
    for name in args.variants or VARIANTS:
        row = evaluate(bench, name, VARIANTS[name])
        print(f"| {name} | {row['peak_rss_mb']} | {row['latency_s']} | {row['iou_min']} | {row['iou_no_subject']} |",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
