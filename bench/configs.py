"""The live points of the memory/latency frontier: what the service runs at,
what it can be switched to, and the reference.

A point has two halves: what the process must be *started* with
(environment: glibc's malloc variables, LD_PRELOAD of another allocator) and
what the onnxruntime session is *created* with. The first half is why every
point runs in a fresh process (bench/bare.py, bench/one_config.py).

The service's points are derived from isnet_wsgi.config.Settings and
malloc.env, never written out: they move when the service does. The ~40
points tried from 2026-11-24 to 2026-12-02 are a log, not code:
bench/results/experiments.md.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from bench.harness import malloc_env

# Debian's packages (`apt-get install -y libjemalloc2`).
ALLOCATOR_LIBRARIES = {
    "jemalloc": ("/usr/lib/x86_64-linux-gnu/libjemalloc.so.2",
                 "/usr/lib/aarch64-linux-gnu/libjemalloc.so.2"),
}
# PERF: jemalloc that never gives freed pages back, big blocks included
# (oversize_threshold 0): onnxruntime's defaults' speed at their ~400 MB
# (bench/results/README.md, "Allocators").
JEMALLOC_RETAIN = {"MALLOC_CONF": "oversize_threshold:0,dirty_decay_ms:-1,muzzy_decay_ms:-1"}


@dataclasses.dataclass(frozen=True)
class Config:
    name: str
    summary: str
    # The service's session options (isnet_wsgi.model.session.SessionOptions,
    # as a dict): the child starts a Segmenter with them, as a worker does.
    # None: onnxruntime's defaults, as rembg makes its session.
    session: dict | None = None
    # Process start-up.
    env: dict = dataclasses.field(default_factory=dict)
    allocator: str | None = None       # jemalloc, via LD_PRELOAD

    def process_env(self, base: dict[str, str]) -> dict[str, str] | None:
        """The environment to start this point with; None if its allocator is missing."""
        env = {k: v for k, v in base.items()
               if not k.startswith("MALLOC_") and k not in ("LD_PRELOAD", "GLIBC_TUNABLES")}
        env.update(self.env)
        env["ORT_DISABLE_TELEMETRY"] = "1"
        if self.allocator:
            library = allocator_path(self.allocator)
            if library is None:
                return None
            env["LD_PRELOAD"] = str(library)
        return env

    def settings_text(self) -> str:
        """The point as session options and environment, for tables."""
        parts = ["ort.SessionOptions() defaults"] if self.session is None else [
            f"{key}={value}" for key, value in self.session.items()]
        parts += [f"{key}={value}" for key, value in self.env.items()]
        parts += [f"LD_PRELOAD={self.allocator}"] * bool(self.allocator)
        return " ".join(parts)


def from_settings(name: str, summary: str, model: Path, settings_env: dict[str, str] | None = None,
                  process_env: dict[str, str] | None = None, allocator: str | None = None
                  ) -> Config:
    """The point the service runs at with these settings (ORT_ARENA_MB=0, say)
    in this machine's container limit: the session options its Segmenter
    would start with, started with ``process_env`` (default: malloc.env, as
    `make run` starts it)."""
    from isnet_wsgi.config import Settings  # noqa: PLC0415
    from isnet_wsgi.model.segmenter import Segmenter  # noqa: PLC0415 (imports onnxruntime)

    settings = Settings.from_env({"MODEL_PATH": str(model), **(settings_env or {})})
    options = Segmenter.from_settings(settings).options
    return Config(name, summary, dataclasses.asdict(options),
                  dict(malloc_env() if process_env is None else process_env), allocator)


def allocator_path(name: str) -> Path | None:
    for candidate in ALLOCATOR_LIBRARIES[name]:
        if os.path.exists(candidate):
            return Path(candidate)
    return None


def live_points(model: Path) -> tuple[Config, ...]:
    """The reference, the service as configured, and what its settings switch it to."""
    return (
        Config("ort-defaults", "rembg's session: onnxruntime's defaults (its arena and "
               "memory pattern on)"),
        from_settings("service", "the service as `make run` starts it (its settings' defaults, "
                      "this machine's container limit, malloc.env)", model),
        from_settings("service-lean", "no arena (ORT_ARENA_MB=0; the default in containers "
                      "under ARENA_MIN_MEMORY_MB)", model, {"ORT_ARENA_MB": "0"}),
        from_settings("service-pattern", "no arena, onnxruntime's memory pattern on "
                      "(ORT_ARENA_MB=0 ORT_MEMORY_PATTERN=1)", model,
                      {"ORT_ARENA_MB": "0", "ORT_MEMORY_PATTERN": "1"}),
        from_settings("service-jemalloc", "no arena, jemalloc that keeps what it freed "
                      "(LD_PRELOAD, MALLOC_CONF, MALLOC_MMAP_THRESHOLD_KB=0)", model,
                      {"ORT_ARENA_MB": "0", "MALLOC_MMAP_THRESHOLD_KB": "0"},
                      process_env=JEMALLOC_RETAIN, allocator="jemalloc"),
    )


def by_name(model: Path) -> dict[str, Config]:
    return {config.name: config for config in live_points(model)}
