"""A bare onnxruntime session in its own fresh process, run on demand.

`python -m bench.bare_child` with a point's environment: it loads the
model, answers "ready", then runs each tensor path written to its stdin and
answers with the run's seconds, CPU seconds and VmHWM. Several of these stay
up side by side so their runs can be interleaved A/B/C/A/B/C in the same
minutes of a shared machine's load.
"""

from __future__ import annotations

import dataclasses
import json
import os
import select
import subprocess
import sys
from pathlib import Path

from bench.configs import Config

ROOT = Path(__file__).resolve().parent.parent
# Seconds for a load or one run before the child is given up on.
ANSWER_TIMEOUT_S = 300


class NotInstalled(RuntimeError):
    """The point's allocator library is not on this machine."""


class BareSession:
    def __init__(self, config: Config, model: Path):
        env = config.process_env(dict(os.environ))
        if env is None:
            raise NotInstalled(f"{config.allocator} not installed (see bench/README.md)")
        self.name = config.name
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.bare_child", "--model", str(model),
             "--spec", json.dumps(dataclasses.asdict(config))],
            cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
        ready = self._answer()
        self.load_s, self.hwm_load_mb = ready["load_s"], ready["hwm_mb"]
        self.last: dict = {}

    def _answer(self) -> dict:
        ready, _, _ = select.select([self.process.stdout], [], [], ANSWER_TIMEOUT_S)
        line = self.process.stdout.readline() if ready else ""
        if not line:
            self.close()
            error = (self.process.stderr.read() or "no answer").strip().splitlines()
            raise RuntimeError(f"{self.name}: {error[-1][:300] if error else 'no answer'}")
        return json.loads(line)

    def run(self, tensor_path: Path) -> dict:
        """One inference: {"seconds", "cpu_s", "hwm_mb", "rss_mb"}."""
        self.process.stdin.write(f"{tensor_path}\n")
        self.process.stdin.flush()
        self.last = self._answer()
        return self.last

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.process.stdin.close()
                self.process.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
