"""`python -m bench.studies.edge_refinement`: does refine_alpha make cut-outs better?

There is no matting data set here, so the bench makes composites whose alpha
it knows: a subject cut from a real photo (a hand-drawn outline around the
astronaut, the camera man, the coffee cup), given soft edges that are known
exactly (a gaussian-feathered outline, and procedurally drawn hair strands
rendered at 4x and box-downsampled, so thin strands have fractional alpha),
laid over real backgrounds (brick, grass, gravel, tinted, and the Hubble deep
field). The alpha used to composite is the truth.

The real model runs on every composite as the service runs it
(Segmenter.mask). Each refinement setting is then scored against the truth:
MAE of alpha (0..1), MAE on the edge band (pixels whose true alpha is strictly
between 0 and 1, or within 3 px of the 0.5 outline), IoU at 0.5; and timed on
a 1024x1024 composite (median), with its extra peak memory measured in a
fresh child process (VmHWM delta; tracemalloc for NumPy's share) and, in a
child that has just run inference, whether it raises the worker's peak RSS.

Writes bench/results/edge-refinement.md. `--model`/`--manifest` pick the ONNX
file (default: the service's model and its manifest).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from bench import harness
from isnet_wsgi.config import DEFAULT_MODEL_PATH
from isnet_wsgi.image import compose
from isnet_wsgi.image.refine import refine_alpha
from isnet_wsgi.model.segmenter import Segmenter, SessionOptions
from isnet_wsgi.runtime import memory
from models.measure import mask_iou

ROOT = Path(__file__).resolve().parents[2]
PHOTOS = ROOT / "tests" / "data"  # the repository's own copies, with their licences
RESULTS = ROOT / "bench" / "results" / "edge-refinement.md"
CANVAS_LONG_SIDE_PX = 1024  # the service's largest image: the most work per request
SUPERSAMPLE = 4             # alpha is drawn at 4x and box-averaged: exact fractional coverage
EDGE_BAND_PX = 3
TIMING_RUNS = 7

# Subjects: outline in the photo's own pixels; `hair` is the range of outline
# vertices along which strands grow; `hair_box` a patch of real hair to take
# the strands' colour from; `feather_px` the gaussian softness of the outline
# at 1024 px (a defocused or motion-soft edge).
SUBJECTS = {
    "astronaut": dict(photo="astronaut.png", feather_px=1.5, hair=(10, 20),
                      hair_box=(200, 30, 260, 60), strands=(500, 1800), shapes=[("polygon", [
                          (18, 512), (20, 420), (28, 330), (55, 285), (95, 240), (113, 195),
                          (125, 170), (142, 153), (178, 150), (180, 130), (172, 123), (155, 90),
                          (153, 63), (165, 40), (195, 22), (230, 15), (265, 22), (288, 45),
                          (300, 80), (297, 100), (280, 127), (270, 140), (257, 167), (277, 173),
                          (300, 213), (320, 240), (335, 260), (355, 300), (362, 345), (420, 343),
                          (470, 357), (500, 385), (512, 420), (512, 512)])]),
    "cameraman": dict(photo="camera.png", feather_px=1.0, hair=(5, 13),
                      hair_box=(195, 72, 235, 92), strands=(350, 1400), shapes=[("polygon", [
                          (0, 512), (0, 235), (50, 175), (100, 130), (140, 110), (160, 105),
                          (162, 100), (170, 83), (187, 70), (200, 65), (227, 67), (250, 80),
                          (267, 100), (270, 120), (263, 133), (257, 143), (273, 140), (323, 140),
                          (325, 150), (330, 177), (333, 200), (317, 207), (300, 217), (297, 237),
                          (287, 263), (280, 283), (240, 310), (207, 300), (177, 350), (150, 420),
                          (150, 512)])]),
    "coffee": dict(photo="coffee.png", feather_px=3.0, hair=None, hair_box=None,
                   strands=(0, 0), shapes=[("ellipse", (78, 72, 480, 390)), ("polygon", [
                       (180, 200), (172, 130), (174, 90), (182, 55), (202, 30), (240, 18),
                       (290, 14), (340, 18), (382, 33), (403, 60), (410, 100), (405, 150),
                       (395, 200)])]),
}
# Textures are greyscale; a tint makes them look like what they are.
BACKGROUNDS = {
    "brick": ("brick.png", (1.0, 0.62, 0.48)),
    "grass": ("grass.png", (0.55, 0.85, 0.40)),
    "gravel": ("gravel.png", (0.92, 0.88, 0.80)),
    "hubble": ("hubble_deep_field.jpg", None),
}
# (label, refine_alpha keyword arguments; None = the model's mask as it is).
# radius_px is at 1024 px, the size of every composite's long side; "band"
# refines only where the model is unsure, "full" everywhere; sN: fit on a grid
# N times coarser. The second row is refine_alpha's default.
SETTINGS = [
    ("none (model mask)", None),
    ("colour r16 eps1e-5 band s4 (default)", {}),
    ("colour r8 eps1e-4 band s4", dict(radius_px=8, epsilon=1e-4)),
    ("colour r32 eps1e-5 band s4", dict(radius_px=32)),
    ("colour r16 eps1e-3 band s4", dict(epsilon=1e-3)),
    ("colour r16 eps1e-2 band s4", dict(epsilon=1e-2)),
    ("colour r16 eps1e-5 band s8", dict(subsample=8)),
    ("colour r16 eps1e-5 band s2", dict(subsample=2)),
    ("colour r16 eps1e-5 band s1 (exact)", dict(subsample=1)),
    ("colour r16 eps1e-5 full s4", dict(band_only=False)),
    ("grey r16 eps1e-5 band s4", dict(guide="grey")),
    ("grey r16 eps1e-2 band s4", dict(guide="grey", epsilon=1e-2)),
    ("grey r8 eps1e-3 band s2", dict(guide="grey", radius_px=8, epsilon=1e-3, subsample=2)),
]
# The per-composite table shows these (the full table has every setting).
PER_CASE = ("none (model mask)", "colour r16 eps1e-5 band s4 (default)",
            "colour r16 eps1e-5 full s4", "grey r16 eps1e-5 band s4")


def photo(name: str) -> Image.Image:
    with Image.open(PHOTOS / name) as opened:
        return opened.convert("RGB")


def _fit(image: Image.Image) -> tuple[Image.Image, float]:
    scale = CANVAS_LONG_SIDE_PX / max(image.size)
    size = (round(image.width * scale), round(image.height * scale))
    return image.resize(size, Image.Resampling.LANCZOS), scale


def _coverage(size: tuple[int, int], draw) -> np.ndarray:
    """What `draw` paints on a 4x 'L' canvas, box-averaged to size, as 0..1."""
    large = Image.new("L", (size[0] * SUPERSAMPLE, size[1] * SUPERSAMPLE), 0)
    draw(ImageDraw.Draw(large), SUPERSAMPLE)
    return np.asarray(large.resize(size, Image.Resampling.BOX), dtype=np.float32) / 255.0


def _strands(outline: list[tuple[float, float]], vertices: tuple[int, int], counts: tuple[int, int],
             rng: np.random.Generator):
    """A drawing function: long flyaway hairs and a dense short fringe grown
    outwards from the outline's edges vertices[0]..vertices[1]."""
    edges = [(outline[i], outline[i + 1]) for i in range(*vertices)]
    lengths = np.array([np.hypot(b[0] - a[0], b[1] - a[1]) for a, b in edges])
    centre = np.mean(outline, axis=0)
    hairs = []
    for count, (short, long) in zip(counts, ((25, 90), (6, 22))):
        for _ in range(count):
            (x0, y0), (x1, y1) = edges[rng.choice(len(edges), p=lengths / lengths.sum())]
            t = rng.random()
            x, y = x0 + t * (x1 - x0), y0 + t * (y1 - y0)
            normal = np.arctan2(y - centre[1], x - centre[0])  # outwards from the centre
            angle = normal + rng.normal(0, 0.45)
            x, y = x - 4 * np.cos(angle), y - 4 * np.sin(angle)  # roots a little inside
            length, points = rng.uniform(short, long), [(x, y)]
            for _ in range(8):
                angle += rng.normal(0, 0.12)
                x, y = x + length / 8 * np.cos(angle), y + length / 8 * np.sin(angle)
                points.append((x, y))
            hairs.append((points, rng.uniform(0.5, 1.4), rng.uniform(0.45, 1.0)))

    def draw(canvas: ImageDraw.ImageDraw, scale: int) -> None:
        for points, width_px, opacity in hairs:
            canvas.line([(x * scale, y * scale) for x, y in points], fill=round(255 * opacity),
                        width=max(1, round(width_px * scale)), joint="curve")
    return draw


def subject(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(colour 0..1, outline alpha, hair colour, hair alpha) on the 1024-px canvas."""
    spec = SUBJECTS[name]
    image, scale = _fit(photo(spec["photo"]))
    shapes = [(kind, [c * scale for c in np.ravel(points)]) for kind, points in spec["shapes"]]

    def draw_outline(canvas: ImageDraw.ImageDraw, k: int) -> None:
        for kind, coords in shapes:
            coords = [c * k for c in coords]
            (canvas.polygon if kind == "polygon" else canvas.ellipse)(coords, fill=255)
    inside = _coverage(image.size, draw_outline)
    hard = Image.fromarray(np.rint(inside * 255).astype(np.uint8), "L")
    soft = hard.filter(ImageFilter.GaussianBlur(spec["feather_px"]))
    outline_alpha = np.asarray(soft, dtype=np.float32) / 255.0
    # The subject's colour just outside its outline (where the feather still
    # shows it) is bled outwards from inside, not the photo's own background.
    colour = np.asarray(image, dtype=np.float32) / 255.0
    weight = np.asarray(hard.filter(ImageFilter.GaussianBlur(8)), dtype=np.float32)[..., None] / 255
    premultiplied = Image.fromarray(np.rint(colour * inside[..., None] * 255).astype(np.uint8))
    bled = np.asarray(premultiplied.filter(ImageFilter.GaussianBlur(8)), dtype=np.float32) / 255
    bled /= np.maximum(weight, 1e-3)
    colour = np.where(inside[..., None] > 0.99, colour, np.clip(bled, 0, 1))
    hair_rgb, hair_alpha = np.zeros(3, np.float32), np.zeros_like(outline_alpha)
    if spec["hair"]:
        box = [round(c * scale) for c in spec["hair_box"]]
        hair_rgb = np.median(colour[box[1]:box[3], box[0]:box[2]].reshape(-1, 3), axis=0)
        outline = [(x * scale, y * scale) for x, y in spec["shapes"][0][1]]
        rng = np.random.default_rng(sum(map(ord, name)))  # the same hair every run
        hair_alpha = _coverage(image.size, _strands(outline, spec["hair"], spec["strands"], rng))
    return colour, outline_alpha, hair_rgb, hair_alpha


def background(name: str, size: tuple[int, int]) -> np.ndarray:
    file_name, tint = BACKGROUNDS[name]
    pixels = np.asarray(compose.cover(photo(file_name), size), np.float32) / 255
    return pixels * np.asarray(tint, np.float32) if tint else pixels


def composite(subject_name: str, background_name: str) -> tuple[Image.Image, np.ndarray]:
    """(RGB composite, true alpha 0..1). Hair lies behind the subject, over the background."""
    colour, outline_alpha, hair_rgb, hair_alpha = subject(subject_name)
    size = outline_alpha.shape[::-1]
    base, hair = outline_alpha[..., None], hair_alpha[..., None]
    behind = hair * hair_rgb + (1 - hair) * background(background_name, size)
    pixels = base * colour + (1 - base) * behind
    alpha = 1 - (1 - outline_alpha) * (1 - hair_alpha)
    return Image.fromarray(np.rint(np.clip(pixels, 0, 1) * 255).astype(np.uint8), "RGB"), alpha


def scores(alpha: np.ndarray, mask: Image.Image) -> dict[str, float]:
    predicted = np.asarray(mask, dtype=np.float32) / 255.0
    error = np.abs(predicted - alpha)
    hard = alpha >= 0.5
    outline = Image.fromarray(hard.astype(np.uint8) * 255, "L")
    size = 2 * EDGE_BAND_PX + 1
    near_outline = (np.asarray(outline.filter(ImageFilter.MaxFilter(size)))
                    != np.asarray(outline.filter(ImageFilter.MinFilter(size))))
    band = near_outline | ((alpha > 0.5 / 255) & (alpha < 1 - 0.5 / 255))
    return {"mae": float(error.mean()), "edge_mae": float(error[band].mean()),
            "iou": mask_iou(predicted, alpha)}


def infer(segmenter: Segmenter, image: Image.Image) -> Image.Image:
    """The model's mask, made exactly as the service makes it."""
    return segmenter.mask(image)


def _child(args: list[str]) -> dict:
    env = harness.service_env(PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-m", "bench.studies.edge_refinement", *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def child_refine_memory(index: int, image_path: str, mask_path: str) -> dict:
    """In a fresh process: extra peak RSS and NumPy's traced peak of one refinement."""
    image, mask = Image.open(image_path).convert("RGB"), Image.open(mask_path).convert("L")
    kwargs = SETTINGS[index][1]
    refine_alpha(image.resize((64, 64)), mask.resize((64, 64)), **kwargs)  # imports, first calls
    before = memory.peak_rss_mb()
    refine_alpha(image, mask, **kwargs)
    after = memory.peak_rss_mb()
    tracemalloc.start()
    refine_alpha(image, mask, **kwargs)
    traced = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return {"rss_mb": round(after - before, 1), "traced_mb": round(traced / 2**20, 1)}


def child_worker_peak(model: str, manifest: str, image_path: str) -> dict:
    """As a worker: inference, then the default refinement; does the peak RSS grow?"""
    segmenter = Segmenter.load(Path(model), Path(manifest), SessionOptions())
    segmenter.start()
    image = Image.open(image_path).convert("RGB")
    mask = infer(segmenter, image)
    inference_peak = memory.peak_rss_mb()
    refine_alpha(image, mask)
    return {"inference_peak_mb": inference_peak, "after_refine_peak_mb": memory.peak_rss_mb()}


def score_all(segmenter: Segmenter) -> tuple[dict, list[dict]]:
    """Every setting on every composite: (scores by setting, rows by composite)."""
    totals = {label: [] for label, _ in SETTINGS}
    per_case = []
    for subject_name in SUBJECTS:
        for background_name in BACKGROUNDS:
            image, alpha = composite(subject_name, background_name)
            mask = infer(segmenter, image)
            row = {"case": f"{subject_name} on {background_name}"}
            for label, kwargs in SETTINGS:
                refined = mask if kwargs is None else refine_alpha(image, mask, **kwargs)
                row[label] = scores(alpha, refined)
                totals[label].append(row[label])
            per_case.append(row)
            print(f"{row['case']}: edge-band MAE {row[PER_CASE[0]]['edge_mae']:.4f} -> "
                  f"{row[PER_CASE[1]]['edge_mae']:.4f} (default)", file=sys.stderr)
    return totals, per_case


def measure_cost(segmenter: Segmenter, image: Image.Image, mask: Image.Image,
                 scratch: Path) -> tuple[dict, float, dict]:
    """Median time of every setting and of inference, timed in the same rounds;
    extra memory of every setting in a fresh child."""
    image_path, mask_path = scratch / "image.png", scratch / "mask.png"
    image.save(image_path)
    mask.save(mask_path)
    runs = {label: [] for label, _ in SETTINGS[1:]}
    inference_s = []
    # NOTE: round-robin, inference included, so a burst of load from a
    # neighbour on the shared machine slows everything in a round alike and
    # the ratio to inference stays fair. The order rotates: whatever runs
    # first after inference was seen to run slower (as in a worker, where
    # refinement always follows inference), and no setting should always pay it.
    settings = SETTINGS[1:]
    for round_index in range(TIMING_RUNS):
        started = time.perf_counter()
        infer(segmenter, image)
        inference_s.append(time.perf_counter() - started)
        shift = round_index % len(settings)
        for label, kwargs in settings[shift:] + settings[:shift]:
            started = time.perf_counter()
            refine_alpha(image, mask, **kwargs)
            runs[label].append(time.perf_counter() - started)
    timing = {label: statistics.median(times) for label, times in runs.items()}
    memory_rows = {label: _child(["--child", "memory", str(index), str(image_path),
                                  str(mask_path)])
                   for index, (label, _) in enumerate(SETTINGS[1:], start=1)}
    return timing, statistics.median(inference_s), memory_rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.studies.edge_refinement", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL_PATH)
    parser.add_argument("--manifest", type=Path, help="default: the model's .json")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        kind, *rest = args.child
        result = (child_refine_memory(int(rest[0]), *rest[1:]) if kind == "memory"
                  else child_worker_peak(*rest))
        print(json.dumps(result))
        return
    manifest = args.manifest or args.model.with_suffix(".json")
    if not args.model.exists():
        sys.exit(f"{args.model} is missing: run `make model`, or pass --model and --manifest")
    segmenter = Segmenter.load(args.model, manifest, SessionOptions())
    segmenter.start()

    totals, per_case = score_all(segmenter)
    image, _ = composite("astronaut", "brick")  # 1024x1024, the largest case
    mask = infer(segmenter, image)
    with tempfile.TemporaryDirectory() as scratch:
        timing, inference_s, memory_rows = measure_cost(segmenter, image, mask, Path(scratch))
        del segmenter  # the worker-peak child loads its own session
        worker = _child(["--child", "worker", str(args.model), str(manifest),
                         str(Path(scratch) / "image.png")])

    text = report(args.model, totals, per_case, timing, memory_rows, worker, inference_s)
    print(text)
    if not args.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(text)
        print(f"written to {RESULTS.relative_to(ROOT)}", file=sys.stderr)


def report(model: Path, totals, per_case, timing, memory_rows, worker, inference_s) -> str:
    lines = [
        "# Edge refinement: refine_alpha against a known alpha",
        "",
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; model `{model.name}`; "
        f"{len(per_case)} composites of 3 subjects x 4 backgrounds at 1024 px long side; "
        f"{platform.machine()}, {os.cpu_count()} cores (shared, timings are medians).",
        "Made by `python -m bench.studies.edge_refinement` (how the composites are made: its docstring).",
        "",
        f"Time: median of {TIMING_RUNS} runs on a 1024x1024 composite, timed round-robin "
        f"with inference on the same image (median {inference_s:.2f} s) so that load from "
        "neighbours hits both alike. Extra RSS: VmHWM growth during one refinement in a "
        "fresh process; NumPy: tracemalloc peak of the same call.",
        "Setting names: guide (colour or grey), window radius at 1024 px, epsilon, band "
        "(refine only where the model's mask is unsure, 8..247, and next to it) or full, "
        "sN (fit on an N-times coarser grid; s1 is the exact guided filter).",
        "",
        "| setting | MAE | edge-band MAE | IoU@0.5 | time ms | % of inference "
        "| extra RSS MB | NumPy peak MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, results in totals.items():
        mean = {key: statistics.fmean(r[key] for r in results) for key in results[0]}
        if label in timing:
            cost = (f"{timing[label] * 1000:.0f} | {100 * timing[label] / inference_s:.1f} | "
                    f"{memory_rows[label]['rss_mb']:.1f} | {memory_rows[label]['traced_mb']:.1f}")
        else:
            cost = "- | - | - | -"
        lines.append(f"| {label} | {mean['mae']:.4f} | {mean['edge_mae']:.4f} | "
                     f"{mean['iou']:.4f} | {cost} |")
    labels = list(PER_CASE)
    lines += ["", "Edge-band MAE per composite (lower is better):", "",
              "| composite | " + " | ".join(labels) + " |",
              "|---|" + "---:|" * len(labels)]
    for row in per_case:
        cells = " | ".join(f"{row[label]['edge_mae']:.4f}" for label in labels)
        lines.append(f"| {row['case']} | {cells} |")
    lines += ["", f"Worker peak RSS: {worker['inference_peak_mb']:.0f} MB after inference, "
              f"{worker['after_refine_peak_mb']:.0f} MB after the default refinement "
              "(the same process, with the service's malloc settings).", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
