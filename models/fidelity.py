"""Fidelity on the hard set: the service's masks against rembg's (reference.py).

`python -m models.fidelity [MODEL]` prints, per held-out photo of
models/hardset/, the IoU at 0.5 and the mean absolute alpha error of the
mask the service makes with MODEL (default: the built model) against the
reference mask, then the figures per category and the worst photo.
`--write-references` regenerates models/hardset/reference/ (the masks the
test suite compares with) from the fp32 model.

The service's mask is made by the service's own code, Pipeline.mask, so a
change to its resize filters or tensor making shows here as it would to a
user. A variant model (built into a scratch folder by models/recipes.py)
runs through the same code with a manifest made for it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Iterator
from pathlib import Path

from PIL import Image

from models import measure, reference
from models.manifest import (
    HELD_OUT_DIR,
    MODEL_PATH,
    REFERENCE_DIR,
    photos,
    read_manifest,
)

# Issue 11's targets for every held-out photo.
TARGET_IOU = 0.99
TARGET_MAE = 0.004


def category(photo: Path) -> str:
    """The category a photo's name starts with: `fur-dog.jpg` is fur."""
    return photo.stem.split("-", 1)[0]


def load_photo(path: Path) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")


def reference_path(photo: Path) -> Path:
    return REFERENCE_DIR / f"{photo.stem}.png"


def load_reference(photo: Path) -> Image.Image:
    with Image.open(reference_path(photo)) as mask:
        return mask.convert("L")


def write_references(threads: int = measure.THREADS) -> list[Path]:
    """Regenerate every held-out photo's reference mask from the fp32 model."""
    session = reference.fp32_session(threads)
    REFERENCE_DIR.mkdir(exist_ok=True)
    written = []
    for photo in photos(HELD_OUT_DIR):
        reference.reference_mask(session, load_photo(photo)).save(reference_path(photo), optimize=True)
        written.append(reference_path(photo))
    return written


def service_pipeline(model_path: Path, manifest: dict | None = None, threads: int = measure.THREADS):
    """The service's Pipeline around `model_path`; `manifest` defaults to the
    built model's (a variant passes its own, see manifest.variant_manifest)."""
    from isnet_wsgi.config import Settings
    from isnet_wsgi.model.segmenter import ModelFile, Segmenter, SessionOptions
    from isnet_wsgi.pipeline import Pipeline

    manifest = manifest or read_manifest()
    options = SessionOptions(intra_op_threads=threads)
    segmenter = Segmenter("hardset", ModelFile.open_verified(model_path, manifest["sha256"]), manifest, options)
    segmenter.start()
    return Pipeline(Settings(), segmenter)


def score(mask: Image.Image, wanted: Image.Image) -> dict:
    return {"iou": round(measure.mask_iou(mask, wanted), 4),
            "mae": round(measure.mean_abs_error(mask, wanted), 5)}


def held_out_scores(pipeline) -> Iterator[tuple[Path, dict]]:
    """(photo, score) for each held-out photo, against its committed reference mask."""
    for photo in photos(HELD_OUT_DIR):
        yield photo, score(pipeline.mask(load_photo(photo)), load_reference(photo))


def summary(rows: dict[str, dict]) -> dict:
    """Per category: lowest IoU, highest MAE; and the worst photo overall (lowest IoU)."""
    categories: dict[str, list[dict]] = {}
    for name, row in rows.items():
        categories.setdefault(category(Path(name)), []).append(row)
    worst = min(rows, key=lambda name: rows[name]["iou"])
    return {
        "per_category": {name: {"photos": len(group), "iou_min": min(r["iou"] for r in group),
                                "mae_max": max(r["mae"] for r in group)}
                         for name, group in sorted(categories.items())},
        "iou_min": rows[worst]["iou"], "iou_median": statistics.median(r["iou"] for r in rows.values()),
        "mae_max": max(r["mae"] for r in rows.values()),
        "mae_median": statistics.median(r["mae"] for r in rows.values()),
        "on_target": sum(r["iou"] >= TARGET_IOU and r["mae"] <= TARGET_MAE for r in rows.values()),
        "worst_photo": worst,
    }


def evaluate(model_path: Path, manifest: dict | None = None, threads: int = measure.THREADS) -> dict:
    """Every held-out photo's score for a model, and the summary."""
    pipeline = service_pipeline(model_path, manifest, threads)
    rows = {photo.name: row for photo, row in held_out_scores(pipeline)}
    return {"photos": rows, **summary(rows)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.fidelity", description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", type=Path, default=MODEL_PATH)
    parser.add_argument("--manifest", type=Path, help="the model's manifest (default: the built model's)")
    parser.add_argument("--threads", type=int, default=measure.THREADS)
    parser.add_argument("--write-references", action="store_true",
                        help="regenerate models/hardset/reference/ from the fp32 model first")
    args = parser.parse_args(argv)
    if args.write_references:
        print(f"wrote {len(write_references(args.threads))} reference masks")
    manifest = json.loads(args.manifest.read_text()) if args.manifest else None
    result = evaluate(args.model, manifest, args.threads)
    print("| photo | IoU | MAE |\n|---|---|---|")
    for name, row in result["photos"].items():
        print(f"| {name} | {row['iou']:.4f} | {row['mae']:.4f} |")
    print(json.dumps({k: v for k, v in result.items() if k != "photos"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
