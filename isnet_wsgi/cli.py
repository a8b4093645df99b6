"""The command line: ``python -m isnet_wsgi remove|color IN... -o OUT``.

The same options, checks and pipeline as ``POST /api/bg/remove`` and
``/api/bg/change_color``: the flags are handed to options.remove_options or
color_options as text, so a bad value fails with the same message (and code)
the API would answer.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TextIO

from .config import ConfigError, Settings
from .file_names import split_file_name
from .image.decode import decode as decode_image
from .image.encode import ENCODINGS, format_names
from .image.errors import InvalidImage
from .model.segmenter import InferenceTimeout, ModelError, Segmenter
from .options import OptionError, color_options, remove_options
from .pipeline import Output, Pipeline, accepted_formats

PROGRESS_BAR_WIDTH = 30


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="python -m isnet_wsgi",
                                   description="Background removal on local files.")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("inputs", nargs="+", metavar="IN", type=Path,
                        help="image files, or folders whose images are all processed")
    common.add_argument("-o", "--output", required=True, type=Path, metavar="OUT",
                        help="a folder (created if needed) for <prefix>_<name>.<ext> files; "
                             "or, for a single input file, the output file's path")
    common.add_argument("--max-dimension", default="",
                        help="long side of the output, px (at most MAX_DIMENSION)")
    common.add_argument("--refine", default="", metavar="true|false",
                        help="refine the mask's edges (default: the REFINE_DEFAULT setting)")
    settings_note = ("MODEL_PATH, MAX_DIMENSION and the other settings come from the "
                     "environment, as for the server.")
    commands = root.add_subparsers(dest="command", required=True)
    remove = commands.add_parser(
        "remove", parents=[common], help="cut the subject out of images (files or folders)",
        description="Cut the subject out of each image (nobg_<name>.png). " + settings_note)
    remove.add_argument("--format", default="", help="png (default) or webp (lossless)")
    remove.add_argument("--mask", action="store_true", help="write the greyscale mask instead")
    remove.add_argument("--crop", action="store_true", help="crop to the subject")
    remove.add_argument("--margin", default="", help="pixels kept around the subject with --crop")
    color = commands.add_parser(
        "color", parents=[common], help="put the subject on a colour, a blur or another image",
        description="Put each image's subject on a new background (color_<name>.jpg); "
                    "white unless one of --color, --blur or --background. " + settings_note)
    color.add_argument("--color", default="", help="#RRGGBB, #RGB or R,G,B")
    color.add_argument("--blur", default="", help="blur the photo's own background, radius px")
    color.add_argument("--background", type=Path, help="an image to put behind the subject")
    color.add_argument("--format", default="", help="jpeg (default), png or webp")
    return root


def main(argv: list[str] | None = None, *, stdout: TextIO = sys.stdout,
         stderr: TextIO = sys.stderr) -> int:
    """Run the command; 0 when every image was written, 1 if any failed, 2 on bad usage."""
    args = parser().parse_args(argv)
    try:
        settings = Settings.from_env()
        make, image_format = _command(args, settings)
        _check_output_name(args, image_format)
    except (ConfigError, OptionError, UsageError, InvalidImage) as error:
        stderr.write(f"error: {error}\n")
        return 2
    except OSError as error:
        stderr.write(f"error: {_reason(error)}\n")
        return 2
    jobs = list(_jobs(args.inputs, settings))
    if not jobs:
        stderr.write(f"error: no images found in {', '.join(str(p) for p in args.inputs)} "
                     f"(looked for .{', .'.join(settings.allowed_extensions)})\n")
        return 1
    try:
        pipeline = Pipeline(settings, load_segmenter(settings))
    except ModelError as error:
        stderr.write(f"error: {error}\n")
        return 1
    single_file = len(args.inputs) == 1 and args.inputs[0].is_file()
    progress = _Progress(len(jobs), stderr) if any(p.is_dir() for p in args.inputs) else None
    failures = _run(jobs, args.output, single_file, lambda data: make(pipeline, data), progress)
    written = len(jobs) - len(failures)
    stdout.write(f"{written} written, {len(failures)} failed\n")
    for path, reason in failures:
        stdout.write(f"  {path}: {reason}\n")
    return 1 if failures else 0


class UsageError(ValueError):
    """The command line asks for something that cannot be done (exit 2)."""


def _check_output_name(args, image_format: str) -> None:
    """-o x.jpg for a PNG result would write PNG bytes under a JPEG name: refused."""
    output = args.output
    if not (len(args.inputs) == 1 and args.inputs[0].is_file() and output.suffix
            and not output.is_dir()):
        return  # OUT is a folder: the names are made to fit
    suffix = output.suffix.lower().lstrip(".")
    if format_names(image_format).get(suffix) != image_format:
        extension = ENCODINGS[image_format].extension
        raise UsageError(f"-o {output.name} names a .{suffix} file, but the result is "
                         f"{image_format}; name it .{extension}, or choose the format "
                         "with --format")


def _reason(error: OSError, *, named: bool = True) -> str:
    """An OSError as a sentence: 'photo.jpg: no such file', not '[Errno 2] ...'."""
    name = f"{error.filename}: " if error.filename and named else ""
    if isinstance(error, FileNotFoundError):
        return f"{name}no such file or folder"
    if isinstance(error, IsADirectoryError):
        return f"{name}is a folder, not a file"
    if isinstance(error, PermissionError):
        return f"{name}permission denied"
    return f"{name}{error.strerror.lower()}" if error.strerror else str(error)


def _command(args, settings: Settings):
    """The options checked before the model loads: how to make one output, and its format."""
    common = {"max_dimension": args.max_dimension, "refine": args.refine, "format": args.format}
    limits = {"ceiling_px": settings.max_dimension_px, "refine_default": settings.refine_default}
    if args.command == "remove":
        options = remove_options({**common, "mask": str(args.mask), "crop": str(args.crop),
                                  "margin": args.margin}, **limits)
        return lambda pipeline, data: pipeline.remove(data, options), options.image_format
    background = args.background.read_bytes() if args.background else None
    options = color_options({**common, "color": args.color, "blur": args.blur},
                            background_file=background is not None, **limits)
    if background is not None:
        # A bad background is one usage error, not a failure for every photo.
        decode_image(background, formats=accepted_formats(settings),
                     max_pixels=settings.max_image_pixels,
                     max_dimension_px=settings.max_dimension_px)
    return (lambda pipeline, data: pipeline.change_color(data, options,
                                                         background_data=background),
            options.image_format)


def load_segmenter(settings: Settings) -> Segmenter:
    segmenter = Segmenter.from_settings(settings)
    segmenter.start()
    return segmenter


def _jobs(inputs: list[Path], settings: Settings):
    """Each input file; for a folder, its images (allowed extensions), in name order."""
    for path in inputs:
        if path.is_dir():
            yield from sorted(child for child in path.iterdir() if child.is_file()
                              and split_file_name(child.name)[1] in settings.allowed_extensions)
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
        except OSError as error:
            failures.append((path, _reason(error, named=False)))
        except (InvalidImage, InferenceTimeout) as error:
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
    return output / result.file_name(path.name)


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
