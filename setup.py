"""Puts the built model inside the package, so an installed `isnet-wsgi` finds it.

Everything else about the package is declared in pyproject.toml. The model is
built by `make model` (models/build.py), not committed; building a package
without it would give a command that fails on its first photo, so it refuses.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

MODEL = Path(__file__).resolve().parent / "models" / "isnet-general-tiny.onnx"


class BuildWithModel(build_py):
    def run(self):
        super().run()
        if not MODEL.is_file():
            raise SystemExit(f"{MODEL} is missing: run `make model` before `pip install .`")
        target = Path(self.build_lib) / "isnet_wsgi" / "models"
        target.mkdir(parents=True, exist_ok=True)
        for path in (MODEL, MODEL.with_suffix(".json")):
            shutil.copyfile(path, target / path.name)


setup(cmdclass={"build_py": BuildWithModel})
