"""`pip install .` gives a working `isnet-wsgi` command, from any folder, with its model inside."""

from __future__ import annotations

import os
import shutil
import sys
import zipfile
from pathlib import Path

from PIL import Image

from isnet_wsgi.config import MODEL_FILE_NAME
from tests.processes import run

ROOT = Path(__file__).resolve().parents[1]
# What setup.py and pyproject.toml read: the package, its metadata and the built model.
SOURCES = ("isnet_wsgi", "pyproject.toml", "setup.py", "README.md", "requirements.txt")
BUILD_TIMEOUT_S = 180


def test_the_installed_command_finds_its_model_from_any_folder(tmp_path):
    # Built from a copy, so the build's own folders never land in the checkout.
    source = tmp_path / "source"
    source.mkdir()
    for name in SOURCES:
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copyfile
        copy(ROOT / name, source / name)
    (source / "models").mkdir()
    for name in (MODEL_FILE_NAME, Path(MODEL_FILE_NAME).with_suffix(".json").name):
        shutil.copyfile(ROOT / "models" / name, source / "models" / name)
    built = run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                 "--no-build-isolation", "--wheel-dir", str(tmp_path / "wheels"), str(source)],
                cwd=source, timeout=BUILD_TIMEOUT_S)
    assert built.returncode == 0, built.stderr
    wheel, = (tmp_path / "wheels").glob("isnet_wsgi-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        assert f"isnet_wsgi/models/{MODEL_FILE_NAME}" in archive.namelist()

    target = tmp_path / "installed"
    installed = run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                     "--target", str(target), str(wheel)], cwd=tmp_path, timeout=BUILD_TIMEOUT_S)
    assert installed.returncode == 0, installed.stderr

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    Image.open(ROOT / "tests" / "data" / "coffee.png").convert("RGB").save(elsewhere / "cup.jpg")
    env = {key: value for key, value in os.environ.items() if key != "MODEL_PATH"}
    env["PYTHONPATH"] = str(target)  # the installed copy, not the checkout
    removed = run([str(target / "bin" / "isnet-wsgi"), "remove", "cup.jpg", "-o", "out"],
                  cwd=elsewhere, env=env, timeout=BUILD_TIMEOUT_S)
    assert removed.returncode == 0, removed.stdout + removed.stderr
    with Image.open(elsewhere / "out" / "nobg_cup.png") as cut_out:
        assert cut_out.mode == "RGBA"
        lowest_alpha, highest_alpha = cut_out.getextrema()[3]
    assert (lowest_alpha, highest_alpha > 250) == (0, True)  # a cleared background, a subject
