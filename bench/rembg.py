"""rembg's server beside ours: `rembg s --no-ui` from its own venv, offline, on loopback.

Installed on first use into bench/.venv-rembg (git-ignored) with pip, as the
machine configures it. It gets the same ONNX file as our service (or rembg's
own fp32 network) through ``-F model=dis_custom`` and ``extras``.
"""

from __future__ import annotations

import json
import os
import subprocess
import urllib.parse
from pathlib import Path

from bench.harness import HOST, ROOT, Removal, Server, free_port, multipart_body

REMBG_VENV = ROOT / "bench" / ".venv-rembg"
# The rembg release the bench's figures (and models/reference.py) are checked against.
REMBG_REQUIREMENT = "rembg[cpu,cli]==2.0.86"


class Rembg(Server):
    """`rembg s --no-ui` on ``model_path``, glibc's malloc left at its defaults."""

    name = "rembg"
    health_path = "/api"  # FastAPI's docs page: answers once uvicorn is up
    # Its first start after install compiles pymatting's numba kernels: over
    # 120 s on 2 loaded cores (2026-12-07, load 6-7); later starts ~5 s.
    start_timeout_s = 600

    @classmethod
    def create(cls, model_path: Path, log_dir: Path):
        port = free_port()
        env = {name: value for name, value in os.environ.items()
               if not name.startswith("MALLOC_") and name not in ("LD_PRELOAD", "GLIBC_TUNABLES")}
        env.update({"U2NET_HOME": str(model_path.parent), "ORT_DISABLE_TELEMETRY": "1",
                    "PYTHONUNBUFFERED": "1",
                    # rembg opens a browser on start-up; make that a no-op command.
                    "BROWSER": "true"})
        command = [str(REMBG_VENV / "bin" / "rembg"), "s", "--no-ui", "--host", HOST,
                   "--port", str(port), "--log_level", "warning"]
        server = cls(command, env, log_dir / f"rembg-{port}.log", port)
        server.model_path = model_path
        return server

    def removal(self, filename: str, data: bytes) -> Removal:
        extras = urllib.parse.quote(json.dumps({"model_path": str(self.model_path)}))
        return Removal(f"/api/remove?extras={extras}",
                       *multipart_body(data, filename, {"model": "dis_custom"}))


def installed() -> bool:
    return (REMBG_VENV / "bin" / "rembg").exists()


def install(timeout_s: int = 1200) -> None:
    """rembg in its own venv (git-ignored), with pip as the machine configures it."""
    print(f"installing {REMBG_REQUIREMENT} into {REMBG_VENV} (once) ...")
    subprocess.run(["python3", "-m", "venv", str(REMBG_VENV)], check=True, timeout=120)
    subprocess.run([str(REMBG_VENV / "bin" / "pip"), "install", "--quiet", REMBG_REQUIREMENT],
                   check=True, timeout=timeout_s)
