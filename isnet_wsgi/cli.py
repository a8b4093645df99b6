"""The command line: ``python -m isnet_wsgi remove IN... -o OUT``.

The same options, checks and pipeline as ``POST /api/bg/remove``: the flags
are handed to options.remove_options as text, so a bad value fails with the
same message (and code) the API would answer.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TextIO

from . import imaging
from .config import ConfigError, Settings
from .model import InferenceTimeout, ModelError, Segmenter
from .options import OptionError, remove_options
from .pipeline import Output, Pipeline

PROGRESS_BAR_WIDTH = 30


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="python -m isnet_wsgi",
                                   description="Background removal on local files.")
    commands = root.add_subparsers(dest="command", required=True)
    remove = commands.add_parser(
        "remove", help="cut the subject out of images (files or folders)",
        description="Cut the subject out of each image. MODEL_PATH, MAX_DIMENSION and the "
                    "other settings come from the environment, as for the server.")
    remove.add_argument("inputs", nargs="+", metavar="IN", type=Path,
                        help="image files, or folders whose images are all processed")
    remove.add_argument("-o", "--output", required=True, type=Path, metavar="OUT",
                        help="a folder (created if needed) for nobg_<name>.<ext> files; "
                             "or, for a single input file, the output file's path")
    remove.add_argument("--format", default="png", help="png (default) or webp (lossless)")
    remove.add_argument("--mask", action="store_true", help="write the greyscale mask instead")
    remove.add_argument("--crop", action="store_true", help="crop to the subject")
    remove.add_argument("--margin", default="", help="pixels kept around the subject with --crop")
    remove.add_argument("--max-dimension", default="",
                        help="long side of the output, px (at most MAX_DIMENSION)")
    remove.add_argument("--refine", default="", metavar="true|false",
                        help="refine the mask's edges (default: the REFINE_DEFAULT setting)")
    return root


def main(argv: list[str] | None = None, *, stdout: TextIO = sys.stdout,
         stderr: TextIO = sys.stderr) -> int:
    """Run the command; 0 when every image was written, 1 if any failed, 2 on bad usage."""
    args = parser().parse_args(argv)
    try:
        settings = Settings.from_env()
        options = remove_options({
            "format": args.format, "mask": str(args.mask), "crop": str(args.crop),
            "margin": args.margin, "max_dimension": args.max_dimension, "refine": args.refine,
        }, ceiling_px=settings.max_dimension_px, refine_default=settings.refine_default)
    except (ConfigError, OptionError) as error:
        stderr.write(f"error: {error}\n")
        return 2
    try:
        pipeline = Pipeline(settings, load_segmenter(settings))
    except ModelError as error:
        stderr.write(f"error: {error}\n")
        return 1
    jobs = list(_jobs(args.inputs, settings))
    single_file = len(args.inputs) == 1 and args.inputs[0].is_file()
    progress = _Progress(len(jobs), stderr) if any(p.is_dir() for p in args.inputs) else None
    failures = _run(jobs, args.output, single_file, lambda data: pipeline.remove(data, options),
                    progress)
    written = len(jobs) - len(failures)
    stdout.write(f"{written} written, {len(failures)} failed\n")
    for path, reason in failures:
        stdout.write(f"  {path}: {reason}\n")
    return 1 if failures or not jobs else 0


def load_segmenter(settings: Settings) -> Segmenter:
    segmenter = Segmenter.from_settings(settings)
    segmenter.start()
    return segmenter


def _jobs(inputs: list[Path], settings: Settings):
    """Each input file; for a folder, its images (allowed extensions), in name order."""
    for path in inputs:
        if path.is_dir():
            yield from sorted(child for child in path.iterdir() if child.is_file()
                              and child.suffix.lower().lstrip(".") in settings.allowed_extensions)
        else:
            yield path  # a missing file is reported as a failure, not skipped


def _run(jobs: list[Path], output: Path, single_file: bool, make, progress) -> list:
    failures: list[tuple[Path, str]] = []
    written: set[Path] = set()
    for index, path in enumerate(jobs):
        try:
            result: Output = make(path.read_bytes())
            target = _target(path, output, result, single_file)
            if target in written:  # two inputs with one name: never overwrite silently
                raise FileExistsError(f"{target} was already written by this run")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(result.body)
            written.add(target)
        except (OSError, imaging.InvalidImage, InferenceTimeout) as error:
            failures.append((path, str(error) or type(error).__name__))
        if progress is not None:
            progress.show(index + 1, path.name)
    if progress is not None:
        progress.done()
    return failures


def _target(path: Path, output: Path, result: Output, single_file: bool) -> Path:
    # One input file and an OUT that names a file (has a suffix, is no folder): OUT itself.
    if single_file and output.suffix and not output.is_dir():
        return output
    return output / f"{result.prefix}_{path.stem}.{result.extension}"


class _Progress:
    """A one-line text progress bar, redrawn in place with a carriage return."""

    def __init__(self, total: int, stream: TextIO):
        self.total = max(total, 1)
        self.stream = stream

    def show(self, done: int, name: str) -> None:
        filled = PROGRESS_BAR_WIDTH * done // self.total
        bar = "#" * filled + "." * (PROGRESS_BAR_WIDTH - filled)
        self.stream.write(f"\r[{bar}] {done}/{self.total} {name[:40]:<40}")
        self.stream.flush()

    def done(self) -> None:
        self.stream.write("\n")
        self.stream.flush()
