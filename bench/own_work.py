"""The service's own steps on one core and on the worker's cores, photo by photo.

    python -m bench own-work [--runs N] [--folder DIR]

In-process, in a process set up as a worker is (the session started, so the
kept heap and the glibc arenas are the worker's). For each photo (default:
the held-out hard set, models/hardset/held-out, which no step here was tuned
on), sent as a PNG at its own size: the decode by Pillow alone and as the
service decodes (pngdecode where it applies), then the model input, the
mask back to the photo's size and the cut-out's PNG encode, each with one
thread and with INTRA_OP_THREADS. Medians of N runs, in ms; the pixels of
both ways are checked equal.
"""

from __future__ import annotations

import io
import statistics
import time
from pathlib import Path

from PIL import Image

from bench.report import table
from isnet_wsgi.config import Settings
from isnet_wsgi.image import compose, png, pngdecode
from isnet_wsgi.model.segmenter import Segmenter, mask_from_output

ROOT = Path(__file__).resolve().parent.parent
HELD_OUT = ROOT / "models" / "hardset" / "held-out"
STEPS = ("decode", "model input", "mask", "encode")
HELP = "the service's own steps (decode, model input, mask, encode), 1 thread vs the worker's"


def median_ms(function, runs: int) -> float:
    seconds = []
    for _ in range(runs):
        started = time.perf_counter()
        function()
        seconds.append(time.perf_counter() - started)
    return 1000 * statistics.median(seconds)


def pillow_alone(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def one_photo(path: Path, segmenter: Segmenter, threads: int, runs: int) -> dict:
    with Image.open(path) as opened:
        buffer = io.BytesIO()
        opened.convert("RGB").save(buffer, "PNG")
    data = buffer.getvalue()
    image = pillow_alone(data)
    as_served = pngdecode.load(data) or image
    assert as_served.tobytes() == image.tobytes(), path.name
    model_input = segmenter.input
    output = segmenter.run(model_input.tensor(image))
    mask = mask_from_output(output, image.size, model_input.resample)
    cut = compose.cutout(image, mask)
    pairs = {
        "decode": (lambda: pillow_alone(data), lambda: pngdecode.load(data) or pillow_alone(data)),
        "model input": (lambda: model_input.tensor(image),
                        lambda: model_input.tensor(image, threads=threads)),
        "mask": (lambda: mask_from_output(output, image.size, model_input.resample),
                 lambda: mask_from_output(output, image.size, model_input.resample,
                                          threads=threads)),
        "encode": (lambda: png.encode(cut), lambda: png.encode(cut, threads=threads)),
    }
    assert (model_input.tensor(image) == model_input.tensor(image, threads=threads)).all()
    assert pillow_alone(png.encode(cut, threads=threads)).tobytes() == cut.tobytes()
    return {"name": path.name, "size": image.size,
            **{step: (median_ms(one, runs), median_ms(many, runs))
               for step, (one, many) in pairs.items()}}


def add_arguments(parser) -> None:
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--folder", type=Path, default=HELD_OUT,
                        help="photos (.jpg, .png); default: the held-out hard set")


def run(args) -> int:
    settings = Settings.from_env({"MODEL_PATH": str(args.model)})
    segmenter = Segmenter.from_settings(settings)
    segmenter.start()
    threads = settings.intra_op_threads
    results = [one_photo(path, segmenter, threads, args.runs)
               for path in sorted(args.folder.glob("*.jp*g")) + sorted(args.folder.glob("*.png"))]
    rows = [[r["name"], f"{r['size'][0]}x{r['size'][1]}",
             *(f"{r[step][0]:.1f} / {r[step][1]:.1f}" for step in STEPS)] for r in results]
    print(table(["photo", "size", *(f"{step}, ms (1 / {threads} threads)" for step in STEPS)], rows))
    print()
    for step in STEPS:
        one, many = ([r[step][index] for r in results] for index in (0, 1))
        print(f"- {step}: median {statistics.median(one):.1f} -> {statistics.median(many):.1f} ms,"
              f" slower on {sum(b > a for a, b in zip(one, many))} of {len(results)}")
    one, many = ([sum(r[step][index] for step in STEPS) for r in results] for index in (0, 1))
    print(f"- the four steps: median {statistics.median(one):.1f} -> "
          f"{statistics.median(many):.1f} ms a photo")
    return 0
