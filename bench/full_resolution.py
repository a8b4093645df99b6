"""Full-resolution cut-outs: the worker's peak and the time, by size and answer.

Each case runs in a child process that starts the model as a worker does
(the Makefile's malloc settings, MAX_DIMENSION=8192, MAX_UPLOAD_MB=25,
ORT_ARENA_MB as given) and makes one answer; the child reports VmHWM (the
worker's peak) and the seconds. ``steps`` reports each step's own peak.
The photos are made here from tests/data (CC0, see its LICENSES.md):
the astronaut scaled up and blended with tiled gravel, so a JPEG of them
is the size of a phone's (photographic texture, not flat colour).

    python -m bench.full_resolution [BEFORE_TREE]   # every part
    run({"parts": ["peaks"], "megapixels": [12, 24], "arenas": [0]})

BEFORE_TREE, a `git archive` of the code before, runs the 1024-px path
from it and from this checkout, alternated (same answers, peak, latency).
"""

from __future__ import annotations

import io
import json
import os
import statistics
import sys
import time
from pathlib import Path

from PIL import Image

from bench import harness
from bench.harness import malloc_env

ROOT = Path(__file__).resolve().parent.parent
PHOTOS = ROOT / "tests" / "data"
# The photo sizes of phones' cameras, 3:2 (width, height).
SIZES_BY_MEGAPIXELS = {1: (1224, 816), 4: (2448, 1632), 12: (4240, 2832), 20: (5472, 3648),
                       24: (6000, 4000), 25: (6120, 4080)}
# (endpoint, options, output format) of each answer measured.
CASES = {
    "remove-png": ("remove", {}, "PNG"),
    "remove-mask": ("remove", {"mask": True}, "PNG"),
    "remove-crop": ("remove", {"crop": True}, "PNG"),
    "color-jpeg": ("change_color", {}, "JPEG"),
    "color-png": ("change_color", {}, "PNG"),
    "blur-12-jpeg": ("change_color", {"blur_radius_px": 12.0}, "JPEG"),  # exact, in bands
    "blur-50-jpeg": ("change_color", {"blur_radius_px": 50.0}, "JPEG"),  # at a reduced size
    "bg-file-jpeg": ("change_color", {"background": True}, "JPEG"),
}


def synthetic_photo(size: tuple[int, int], image_format: str = "JPEG", **save_args) -> bytes:
    """A photographic test picture of ``size``: a CC0 photo scaled up, with texture."""
    photo = Image.open(PHOTOS / "astronaut.png").convert("RGB").resize(
        size, Image.Resampling.BICUBIC)
    tile = Image.open(PHOTOS / "gravel.png").convert("RGB")
    texture = Image.new("RGB", size)
    for top in range(0, size[1], tile.height):
        for left in range(0, size[0], tile.width):
            texture.paste(tile, (left, top))
    picture = Image.blend(photo, texture, 0.2)
    del photo, texture
    buffer = io.BytesIO()
    picture.save(buffer, image_format, **({"quality": 90} if image_format == "JPEG" else {})
                 | save_args)
    return buffer.getvalue()


# Each child starts as a worker does: the settings from its environment,
# the model's session, the pipeline the API uses (a PNG sent as it is made).
_WORKER = r"""
import hashlib, io, json, sys, time
from PIL import Image
from isnet_wsgi.config import Settings
from isnet_wsgi.model.segmenter import Segmenter
from isnet_wsgi.options import ColorOptions, RemoveOptions
from isnet_wsgi.pipeline import Pipeline
from isnet_wsgi.runtime import memory

settings = Settings.from_env()
segmenter = Segmenter.from_settings(settings)
segmenter.start()
pipeline = Pipeline(settings, segmenter, stream=True)
"""

_CHILD = _WORKER + r"""
photo_path, background_path, endpoint, options, image_format, repeats = sys.argv[1:7]
options, repeats = json.loads(options), int(repeats)
data = open(photo_path, "rb").read()
background = open(background_path, "rb").read() if options.pop("background", None) else None
started_mb = memory.peak_rss_mb()
seconds, out_bytes = [], 0
for _ in range(repeats):
    began = time.perf_counter()
    if endpoint == "remove":
        output = pipeline.remove(data, RemoveOptions(image_format=image_format, **options))
    else:
        output = pipeline.change_color(data, ColorOptions(image_format=image_format, **options),
                                       background_data=background)
    out_bytes = len(output.body)
    for part in getattr(output, "stream", None) or ():  # as a server sends it, part by part
        out_bytes += len(part)
    del output
    seconds.append(time.perf_counter() - began)
print(json.dumps({"started_mb": started_mb, "peak_mb": memory.peak_rss_mb(),
                  "seconds": seconds, "out_bytes": out_bytes}))
"""


_STEPS_CHILD = _WORKER + r"""
from isnet_wsgi.image import fullsize
from isnet_wsgi.image.decode import decode, fitted_size
from isnet_wsgi.image.encode import encode
from isnet_wsgi.image.png import encode_in_bands

photo_path, background_path, answer = sys.argv[1:4]
data = open(photo_path, "rb").read()
steps = [("started", 0.0, memory.peak_rss_mb())]

def step(name, make):
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")  # VmHWM restarts from the RSS now: this step's own peak
    began = time.perf_counter()
    made = make()
    steps.append((name, time.perf_counter() - began, memory.peak_rss_mb()))
    return made

background = None
if answer == "bg-file-jpeg":
    background = step("background decode", lambda: pipeline.decode(
        open(background_path, "rb").read(), fullsize.BACKGROUND_MAX_PX))
view = step("model view decode", lambda: decode(
    data, formats=pipeline.formats, max_pixels=settings.max_image_pixels,
    max_dimension_px=settings.max_dimension_px, budget_bytes=settings.decode_budget_bytes,
    size=segmenter.input.size_px))
small = step("inference", lambda: segmenter.mask(view))
del view
size = fitted_size(data, formats=pipeline.formats, max_pixels=settings.max_image_pixels,
                   max_dimension_px=settings.max_dimension_px)
mask = step("mask to full size", lambda: fullsize.upscaled_mask(small, size,
                                                                threads=pipeline.threads))
image = step("full decode", lambda: pipeline.decode(data))
step("subject box", lambda: fullsize.subject_box(mask))
if answer == "remove-png":
    image = step("cut-out in place", lambda: fullsize.cutout_in_place(image, mask))
    step("PNG in bands", lambda: sum(map(len, encode_in_bands(image, threads=pipeline.threads))))
else:
    if background is not None:
        image = step("on background in place", lambda: fullsize.on_cover_in_place(
            image, mask, background))
    elif answer == "blur-12-jpeg":
        image = step("on blur in place", lambda: fullsize.on_blur_in_place(image, mask, 12.0))
    else:
        image = step("on colour in place", lambda: fullsize.on_color_in_place(
            image, mask, (255, 255, 255)))
    del mask, background
    step("JPEG", lambda: len(encode(image, "JPEG", threads=pipeline.threads)))
print(json.dumps(steps))
"""


def steps(photo_path: Path, background_path: Path, answer: str, arena_mb: int) -> list:
    """(step, seconds, its own peak MB) of one full-resolution answer, in a fresh child."""
    return _child(_STEPS_CHILD, [photo_path, background_path, answer], _child_env(arena_mb))


def _child(code: str, args: list, env: dict, cwd: Path = ROOT, timeout_s: int = 1800):
    """What a child running ``code`` prints last, as JSON; its error's last line if it fails."""
    done = harness.run([sys.executable, "-c", code, *map(str, args)], timeout=timeout_s,
                       env=env, cwd=cwd)
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


_COMPARE_CHILD = _WORKER + r"""
from models import reference

photo_paths, rounds = sys.argv[1].split(","), int(sys.argv[2])
fp32 = reference.fp32_session(settings.intra_op_threads)

def ours(data, color):
    output = (pipeline.change_color(data, ColorOptions()) if color
              else pipeline.remove(data, RemoveOptions()))
    return len(output.body) + sum(map(len, output.stream or ()))

def rembg_equivalent(data):
    # rembg.remove as its server runs it: open, the fp32 mask at full size
    # (models/reference.py: LANCZOS to 1024, run, LANCZOS back), naive_cutout
    # (a composite onto transparent RGBA), Pillow's PNG at its defaults.
    image = Image.open(io.BytesIO(data)).convert("RGB")
    mask = reference.reference_mask(fp32, image)
    cutout = Image.composite(image, Image.new("RGBA", image.size, 0), mask)
    buffer = io.BytesIO()
    cutout.save(buffer, "PNG")
    return len(buffer.getvalue())

timings = {}
for path in photo_paths:
    data = open(path, "rb").read()
    ours(data, False)  # first runs: pages and threads, not counted
    seconds = {"ours-png": [], "ours-jpeg": [], "reference-png": []}
    for index in range(rounds):
        order = ["ours-png", "ours-jpeg", "reference-png"]
        for name in order if index % 2 == 0 else order[::-1]:
            began = time.perf_counter()
            if name == "reference-png":
                rembg_equivalent(data)
            else:
                ours(data, name == "ours-jpeg")
            seconds[name].append(time.perf_counter() - began)
    timings[path] = seconds
print(json.dumps(timings))
"""


def compare(photo_paths: list[Path], rounds: int = 3, arena_mb: int = 0) -> dict:
    """Seconds per answer, ours (PNG cut-out, JPEG on white) against the
    rembg-equivalent fp32 pipeline, alternated in one child (same run)."""
    return _child(_COMPARE_CHILD, [",".join(map(str, photo_paths)), rounds],
                  _child_env(arena_mb))


# NOTE: also run from the code before (git archive): its Pipeline may not
# take stream=, so it makes its own; at 1024 px nothing is streamed.
_DEFAULT_PATH_CHILD = _WORKER.replace(", stream=True)", ")") + r"""
photo_paths, rounds = sys.argv[1].split(","), int(sys.argv[2])
uploads = [open(path, "rb").read() for path in photo_paths]
answers = [lambda data: pipeline.remove(data, RemoveOptions()),
           lambda data: pipeline.change_color(data, ColorOptions())]
digests = [hashlib.sha256(answer(data).body).hexdigest() for data in uploads for answer in answers]
first_peak_mb = memory.peak_rss_mb()
seconds = []
for _ in range(rounds):
    for data in uploads:
        began = time.perf_counter()
        answers[0](data)
        seconds.append(time.perf_counter() - began)
print(json.dumps({"digests": digests, "peak_mb": first_peak_mb, "seconds": seconds}))
"""


def default_path(tree: Path, photo_paths: list[Path], rounds: int = 2) -> dict:
    """The 1024-px path run from ``tree`` (the code before, say, from git
    archive) and from this checkout, alternated: answers' sha256, the worker's
    peak after the first of each answer, seconds per cut-out."""
    results: dict[str, dict] = {"before": {"seconds": []}, "after": {"seconds": []}}
    for index in range(4):
        names = ("before", "after") if index % 2 == 0 else ("after", "before")
        for name in names:
            env = _child_env(192) | {"MAX_DIMENSION": "1024", "MAX_UPLOAD_MB": "8",
                                   "PYTHONPATH": str(tree if name == "before" else ROOT),
                                   "MODEL_PATH": str(ROOT / "models" / "isnet-general-tiny.onnx")}
            made = _child(_DEFAULT_PATH_CHILD, [",".join(map(str, photo_paths)), rounds],
                          env, cwd=tree if name == "before" else ROOT)
            results[name]["digests"] = made["digests"]
            results[name].setdefault("peaks_mb", []).append(made["peak_mb"])
            results[name]["seconds"] += made["seconds"]
    return results


def versus_rembg(photo_paths: list[Path], rounds: int = 2,
                 log_dir: Path = Path("/tmp/isnet-full-resolution")) -> dict:
    """Our service (MAX_DIMENSION=8192) and rembg 2.0.86's server on its fp32
    isnet-general-use (models/fp32.py), both up, each photo's cut-out asked of
    each in turn (ABBA): seconds per answer, and each server's peak (VmHWM).
    Needs rembg installed (bench.rembg.install()); offline either way."""
    from bench import harness, rembg
    from isnet_wsgi.runtime import memory
    from models import fp32

    ours = harness.service(ROOT / "models" / "isnet-general-tiny.onnx", log_dir, env={
        "MAX_DIMENSION": "8192", "MAX_UPLOAD_MB": "25", "CACHE_MB": "0"})
    theirs = rembg.Rembg.create(fp32.fp32_model_path(), log_dir)
    seconds: dict[str, dict[str, list[float]]] = {ours.name: {}, theirs.name: {}}
    with ours, theirs:
        for server in (ours, theirs):
            server.start()
            # The first answer loads rembg's model and compiles its kernels.
            server.remove_background("first.png", (PHOTOS / "coffee.png").read_bytes())
        for path in photo_paths:
            data = path.read_bytes()
            for index in range(rounds):
                for server in (ours, theirs) if index % 2 == 0 else (theirs, ours):
                    removal = server.removal(path.name, data)
                    began = time.perf_counter()
                    server.send(removal)
                    seconds[server.name].setdefault(path.name, []).append(
                        time.perf_counter() - began)
        peaks_mb = {ours.name: memory.peak_rss_mb(ours.worker_pids()[0]),
                    theirs.name: memory.peak_rss_mb(theirs.pid)}
    return {"seconds": seconds, "peaks_mb": peaks_mb}


def _child_env(arena_mb: int) -> dict:
    """make run's malloc settings (malloc.env) without huge pages, so each
    step's VmHWM counts the 4 KiB pages it touched, not 2 MiB at a time."""
    env = {**os.environ, **malloc_env()}
    del env["GLIBC_TUNABLES"]
    env.update(MAX_DIMENSION="8192", MAX_UPLOAD_MB="25", CACHE_MB="0",
               ORT_ARENA_MB=str(arena_mb), PYTHONPATH=str(ROOT))
    return env


def measure(photo_path: Path, background_path: Path, case: str, arena_mb: int,
            repeats: int = 1) -> dict:
    """One case in a fresh child: its peak (MB, VmHWM) and seconds per answer."""
    endpoint, options, image_format = CASES[case]
    return _child(_CHILD, [photo_path, background_path, endpoint, json.dumps(options),
                           image_format, repeats], _child_env(arena_mb))


def run(args: dict | None = None) -> dict:
    """Every part asked for (``parts``: peaks, steps, compare, rembg, default_path),
    printed as the tables docs/full-resolution.md cites, and returned. ``rembg``
    needs bench.rembg installed; ``default_path`` needs ``before_tree``."""
    args = args or {}
    parts = args.get("parts", ["peaks", "steps", "compare", "rembg", "default_path"])
    workdir = Path(args.get("workdir", "/tmp/isnet-full-resolution"))
    workdir.mkdir(parents=True, exist_ok=True)
    background_path = _photo(workdir, 12)
    found: dict = {}
    if "peaks" in parts:
        found["peaks"] = _peaks(workdir, background_path, args)
    if "steps" in parts:
        found["steps"] = {}
        for answer in ("remove-png", "bg-file-jpeg"):
            for arena_mb in args.get("arenas", [0, 192]):
                rows = steps(_photo(workdir, 25), background_path, answer, arena_mb)
                found["steps"][f"{answer}, arena {arena_mb}"] = rows
                print(f"\n{answer} at 25 MP, arena {arena_mb} MiB: step, s, its peak MB")
                for name, seconds, peak_mb in rows:
                    print(f"  {name:24} {seconds:6.2f} {peak_mb:7.1f}")
    if "compare" in parts:
        sizes = args.get("compare_megapixels", [4, 12, 20, 24])
        timings = compare([_photo(workdir, size) for size in sizes], args.get("rounds", 3))
        found["compare"] = timings
        print("\n| MP | ours, PNG cut-out s | ours, JPEG on white s | rembg-equivalent fp32, "
              "PNG s | ours / rembg-equivalent (PNG) |\n|---|---|---|---|---|")
        for size, seconds in zip(sizes, timings.values()):
            medians = {name: statistics.median(values) for name, values in seconds.items()}
            print(f"| {size} | {medians['ours-png']:.2f} | {medians['ours-jpeg']:.2f} | "
                  f"{medians['reference-png']:.2f} | "
                  f"{medians['ours-png'] / medians['reference-png']:.2f} |")
    if "rembg" in parts:
        sizes = args.get("compare_megapixels", [4, 12, 20, 24])
        found["rembg"] = made = versus_rembg([_photo(workdir, size) for size in sizes],
                                             args.get("rounds", 3))
        ours, theirs = made["seconds"]["isnet-wsgi"], made["seconds"]["rembg"]
        print("\n| MP | isnet-wsgi, s | rembg 2.0.86 (fp32), s | ratio |\n|---|---|---|---|")
        for size, name in zip(sizes, ours):
            mine, its = statistics.median(ours[name]), statistics.median(theirs[name])
            print(f"| {size} | {mine:.2f} | {its:.2f} | {mine / its:.2f} |")
        print(f"servers' peaks (VmHWM), MB: {made['peaks_mb']}")
    if "default_path" in parts and args.get("before_tree"):
        photos = [PHOTOS / "astronaut.png", PHOTOS / "coffee.png",
                  PHOTOS / "hubble_deep_field.jpg", _photo(workdir, 12)]
        found["default_path"] = made = default_path(Path(args["before_tree"]), photos)
        print("\n1024-px path, before / after: same answers "
              f"{made['before']['digests'] == made['after']['digests']}; first-request peaks "
              f"{made['before']['peaks_mb']} / {made['after']['peaks_mb']} MB; cut-out median "
              f"{statistics.median(made['before']['seconds']):.3f} / "
              f"{statistics.median(made['after']['seconds']):.3f} s")
    return found


def _photo(workdir: Path, megapixels: int) -> Path:
    path = workdir / f"photo-{megapixels}mp.jpg"
    if not path.exists():
        path.write_bytes(synthetic_photo(SIZES_BY_MEGAPIXELS[megapixels]))
    return path


def _peaks(workdir: Path, background_path: Path, args: dict) -> list[dict]:
    rows = []
    print("| MP | answer | arena MiB | worker peak MB | seconds (median) | out MB |")
    print("|---|---|---|---|---|---|")
    for size_mp in args.get("megapixels", [4, 12, 24]):
        for case in args.get("cases", list(CASES)):
            for arena_mb in args.get("arenas", [0, 192]):
                row = {"megapixels": size_mp, "case": case, "arena_mb": arena_mb,
                       **measure(_photo(workdir, size_mp), background_path, case, arena_mb,
                                 args.get("repeats", 1))}
                rows.append(row)
                if "error" in row:
                    print(f"| {size_mp} | {case} | {arena_mb} | {row['error']} | | |")
                    continue
                print(f"| {size_mp} | {case} | {arena_mb} | {row['peak_mb']:.0f} | "
                      f"{statistics.median(row['seconds']):.2f} | "
                      f"{row['out_bytes'] / 1e6:.1f} |", flush=True)
    return rows


if __name__ == "__main__":
    # python -m bench.full_resolution [git-archive of the code before, for the 1024-px path]
    began = time.perf_counter()
    run({"before_tree": sys.argv[1]} if len(sys.argv) > 1 else {})
    print(f"({time.perf_counter() - began:.0f} s)")
