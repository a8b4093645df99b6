"""Helpers the tests share: photos, encoders and settings for the real model."""

from __future__ import annotations

import dataclasses
import io
import os
import subprocess
import sys
from pathlib import Path

from PIL import Image

from bench.harness import multipart_body  # noqa: F401  (tests import it from here)
from isnet_wsgi.config import Settings

DATA = Path(__file__).parent / "data"

# The environment of the person running the tests must not change what the
# tests see (an API_KEY in the shell, say); only MODEL_PATH may point
# elsewhere, and by default it is the model `make model` builds.
_TEST_ENV = {"MODEL_PATH": os.environ.get("MODEL_PATH", "")}


def make_settings(**overrides) -> Settings:
    return dataclasses.replace(Settings.from_env(_TEST_ENV), **overrides)


def photo_bytes(name: str) -> bytes:
    return (DATA / name).read_bytes()


def encode_image(image: Image.Image, image_format: str, **save_args) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, image_format, **save_args)
    return buffer.getvalue()


def open_image(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def reset_peak_rss() -> None:
    """Restart this process's VmHWM from its current RSS (Linux >= 4.0), so a
    test can read the peak of one step."""
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")


def small_page_child(code: str, *args: str) -> str:
    """What ``python -c code args`` prints, run from the repository without
    transparent huge pages: they would fault memory in 2 MiB at a time, and a
    test that counts faults or resident pages wants 4 KiB ones."""
    env = {name: value for name, value in os.environ.items() if name != "GLIBC_TUNABLES"}
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=60, check=True, env=env, cwd=DATA.parent.parent)
    return done.stdout
