"""The candidate configurations of the memory/latency frontier.

A configuration has two halves: what the process must be *started* with
(environment: glibc malloc variables, GLIBC_TUNABLES, LD_PRELOAD of another
allocator) and what the onnxruntime session is *created* with. The first half
is why every point runs in a fresh process (bench/one_config.py).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

# Debian's packages (`apt-get install -y libjemalloc2 libmimalloc2.0`).
ALLOCATOR_LIBRARIES = {
    "jemalloc": ("/usr/lib/x86_64-linux-gnu/libjemalloc.so.2",
                 "/usr/lib/aarch64-linux-gnu/libjemalloc.so.2"),
    "mimalloc": ("/usr/lib/x86_64-linux-gnu/libmimalloc.so.2",
                 "/usr/lib/aarch64-linux-gnu/libmimalloc.so.2"),
}

# What `make run` exports today (Makefile): glibc serves every block above
# 64 KiB from mmap and gives it back on free.
SERVICE_MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "131072"}
# glibc >= 2.35: back mmap'd blocks with transparent huge pages (madvise), so a
# fresh 64 MB activation costs 32 page faults instead of 16384.
HUGETLB_ENV = {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}
LEAN_HUGETLB_ENV = {**SERVICE_MALLOC_ENV, **HUGETLB_ENV}
JEMALLOC_NO_DECAY = {"MALLOC_CONF": "dirty_decay_ms:0,muzzy_decay_ms:0"}
JEMALLOC_BACKGROUND = {"MALLOC_CONF": "background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0"}
# PERF: jemalloc sends blocks above 8 MiB (oversize_threshold) to an arena that
# returns them to the kernel at once, so every large activation page-faults
# again on the next run. Threshold 0 keeps them in the normal arenas, where
# freed pages are reused until the decay timer (here 60 s without use, by a
# background thread) gives them back.
JEMALLOC_KEEP = {"MALLOC_CONF": "oversize_threshold:0,background_thread:true,"
                                "dirty_decay_ms:60000,muzzy_decay_ms:0"}
JEMALLOC_KEEP_ONE_ARENA = {"MALLOC_CONF": JEMALLOC_KEEP["MALLOC_CONF"] + ",narenas:1"}
# Never give freed pages back: the resident set stays at the peak.
JEMALLOC_RETAIN = {"MALLOC_CONF": "oversize_threshold:0,dirty_decay_ms:-1,muzzy_decay_ms:-1"}
# glibc without mmap: every block from the heap, never trimmed, reused as is.
GLIBC_HEAP_ONLY = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(1 << 30),
                   "MALLOC_ARENA_MAX": "1"}
# mimalloc 2.0 (Debian 12): blocks above 16 MiB get their own OS mapping,
# freed at once, unless they come from a reserved arena that is never decommitted.
MIMALLOC_KEEP = {"MIMALLOC_RESERVE_OS_MEMORY": "1GiB", "MIMALLOC_ALLOW_DECOMMIT": "0"}
ARENA_SAME_AS_REQUESTED = {"arena_extend_strategy": 1}


@dataclasses.dataclass(frozen=True)
class Config:
    name: str
    summary: str
    # Session options. ort_defaults=True ignores every other session field and
    # uses a bare ort.SessionOptions(), as rembg does.
    ort_defaults: bool = False
    cpu_arena: bool = False
    memory_pattern: bool = False
    # OrtArenaCfg keys (max_mem, arena_extend_strategy, ...); implies cpu_arena.
    arena_cfg: dict | None = None
    arena_mb: int = 0                  # the service's arena (ORT_ARENA_MB); 0 is none
    intra_op_threads: int = 0          # 0: every CPU this process may use
    allow_spinning: bool = True
    spin_stop: bool = False  # session.force_spinning_stop: no spinning after a run
    prepacking: bool = True
    iobinding: bool = False
    graph_optimization: str = "all"    # all | extended | basic | none
    disabled_optimizers: tuple[str, ...] = ()  # onnxruntime graph transformers to skip
    # onnxruntime session config entries on top ("session.dynamic_block_base", "4").
    session_entries: tuple[tuple[str, str], ...] = ()
    # Process start-up.
    env: dict = dataclasses.field(default_factory=dict)
    allocator: str | None = None       # jemalloc | mimalloc, via LD_PRELOAD

    def process_env(self, base: dict[str, str]) -> dict[str, str] | None:
        """The environment to start this point with; None if its allocator is missing."""
        env = {k: v for k, v in base.items()
               if not k.startswith(("MALLOC_", "MIMALLOC_")) and k not in ("LD_PRELOAD", "GLIBC_TUNABLES")}
        env.update(self.env)
        if self.allocator:
            library = allocator_path(self.allocator)
            if library is None:
                return None
            env["LD_PRELOAD"] = str(library)
        return env

    def settings_text(self) -> str:
        """The configuration as environment/settings, for tables and the README."""
        if self.ort_defaults:
            parts = ["ort.SessionOptions() defaults"]
        else:
            arena = f"{self.arena_mb}MiB" if self.arena_mb else (
                "on" if self.cpu_arena or self.arena_cfg else "off")
            parts = [f"arena={arena}",
                     f"pattern={'on' if self.memory_pattern else 'off'}"]
            parts += [f"{key}={value}" for key, value in (self.arena_cfg or {}).items()]
            parts += [f"threads={self.intra_op_threads or 'all'}"]
            parts += ["spin=off"] * (not self.allow_spinning)
            parts += ["spin-stop"] * self.spin_stop
            parts += ["prepack=off"] * (not self.prepacking)
            parts += ["iobinding"] * self.iobinding
            parts += [f"opt={self.graph_optimization}"] * (self.graph_optimization != "all")
            parts += [f"no-{name}" for name in self.disabled_optimizers]
            parts += [f"{key}={value}" for key, value in self.session_entries]
        parts += [f"{key}={value}" for key, value in self.env.items()]
        parts += [f"LD_PRELOAD={self.allocator}"] * bool(self.allocator)
        return " ".join(parts)


    def service_env(self) -> dict[str, str]:
        """The service's settings (and process environment) for this point.

        Raises ValueError for a point the service has no setting for yet.
        """
        unsupported = [field for field, value in (
            ("ORT defaults", self.ort_defaults), ("OrtArenaCfg", self.arena_cfg),
            ("prepacking off", not self.prepacking),
            ("spinning off", not self.allow_spinning),
            ("IOBinding", self.iobinding), ("graph level", self.graph_optimization != "all"),
            ("session entries", bool(self.session_entries)))
            if value]
        if unsupported:
            raise ValueError(f"{self.name}: the service has no setting for {', '.join(unsupported)}")
        mmap_bytes = int(self.env.get("MALLOC_MMAP_THRESHOLD_", "0"))
        env = {"ORT_CPU_ARENA": str(int(self.cpu_arena)),
               "ORT_ARENA_MB": str(self.arena_mb),
               "ORT_MEMORY_PATTERN": str(int(self.memory_pattern)),
               # The worker's own mallopt() must agree with the environment.
               "MALLOC_MMAP_THRESHOLD_KB": str(mmap_bytes // 1024)}
        if self.intra_op_threads:
            env["INTRA_OP_THREADS"] = str(self.intra_op_threads)
        return env


def from_settings(settings, environ: dict[str, str]) -> Config:
    """The point the service runs at with these isnet_wsgi.config.Settings,
    started with this environment (`make run`'s exports included)."""
    from isnet_wsgi.model.segmenter import arena_mb  # noqa: PLC0415 (imports onnxruntime)
    from isnet_wsgi.model.session import DISABLED_OPTIMIZERS  # noqa: PLC0415
    from isnet_wsgi.runtime import cgroup  # noqa: PLC0415

    env = {key: value for key, value in environ.items()
           if key.startswith(("MALLOC_", "MIMALLOC_")) or key in ("GLIBC_TUNABLES", "LD_PRELOAD")}
    if settings.malloc_mmap_threshold_kb > 0:  # the worker's mallopt() wins over the env
        env["MALLOC_MMAP_THRESHOLD_"] = str(settings.malloc_mmap_threshold_kb * 1024)
    return Config("service-settings", "the service's current settings",
                  cpu_arena=settings.ort_cpu_arena, memory_pattern=settings.ort_memory_pattern,
                  arena_mb=arena_mb(settings, cgroup.memory_limit_mb()),
                  intra_op_threads=settings.intra_op_threads, env=env,
                  spin_stop=True,  # the service always sets these two (model.py)
                  disabled_optimizers=tuple(DISABLED_OPTIMIZERS))


def allocator_path(name: str) -> Path | None:
    if name == "thpalign":  # this project's own, built on demand
        from bench import thpalign  # noqa: PLC0415
        try:
            return thpalign.library()
        except thpalign.NoCompiler:
            return None
    for candidate in ALLOCATOR_LIBRARIES[name]:
        if os.path.exists(candidate):
            return Path(candidate)
    return None


CANDIDATES: tuple[Config, ...] = (
    Config("ort-defaults", "rembg's session: ORT defaults (arena + pattern on)", ort_defaults=True),
    Config("lean-glibc", "arena and pattern off, glibc defaults"),
    Config("service-now", "today's service: lean + mmap threshold 64 KiB (Makefile)",
          env=SERVICE_MALLOC_ENV),
    Config("mmap-256k", "lean + mmap threshold 256 KiB",
          env={"MALLOC_MMAP_THRESHOLD_": "262144", "MALLOC_TRIM_THRESHOLD_": "131072"}),
    Config("mmap-4m", "lean + mmap threshold 4 MiB",
          env={"MALLOC_MMAP_THRESHOLD_": "4194304", "MALLOC_TRIM_THRESHOLD_": "131072"}),
    Config("mmap-8m-keep", "lean, blocks < 8 MiB from a never-trimmed heap, larger from mmap",
          env={"MALLOC_MMAP_THRESHOLD_": str(8 << 20), "MALLOC_TRIM_THRESHOLD_": str(1 << 30),
               "MALLOC_ARENA_MAX": "1"}),
    Config("mmap-32m-keep", "as mmap-8m-keep with the largest threshold glibc allows, 32 MiB",
          env={"MALLOC_MMAP_THRESHOLD_": str(32 << 20), "MALLOC_TRIM_THRESHOLD_": str(1 << 30),
               "MALLOC_ARENA_MAX": "1"}),
    Config("mmap-64k-hugetlb", "service-now + THP for mmap'd blocks",
          env=LEAN_HUGETLB_ENV),
    Config("mmap-64k-arenamax2", "service-now + MALLOC_ARENA_MAX=2",
          env={**SERVICE_MALLOC_ENV, "MALLOC_ARENA_MAX": "2"}),
    Config("heap-toppad", "lean, one malloc arena, 64 MiB top pad, 32 MiB mmap threshold",
          env={"MALLOC_ARENA_MAX": "1", "MALLOC_TOP_PAD_": str(64 << 20),
               "MALLOC_MMAP_THRESHOLD_": str(32 << 20), "MALLOC_TRIM_THRESHOLD_": str(64 << 20)}),
    Config("pattern-only", "memory pattern on, arena off, mmap 64 KiB", memory_pattern=True,
          env=SERVICE_MALLOC_ENV),
    Config("arena-same-size", "ORT arena, kSameAsRequested, pattern off",
          arena_cfg=ARENA_SAME_AS_REQUESTED),
    Config("arena-pattern-same-size", "ORT arena (kSameAsRequested) + memory pattern: the "
          "planned block is made once and reused, no page faults", memory_pattern=True,
          arena_cfg=ARENA_SAME_AS_REQUESTED),
    Config("arena-pattern-same-size-hugetlb", "arena-pattern-same-size + THP", memory_pattern=True,
          arena_cfg=ARENA_SAME_AS_REQUESTED, env=HUGETLB_ENV),
    Config("arena-same-cap384", "ORT arena, kSameAsRequested, max_mem 384 MiB",
          arena_cfg={**ARENA_SAME_AS_REQUESTED, "max_mem": 384 << 20}),
    # The arena uses a free chunk whole unless it is twice the request or
    # wastes max_dead_bytes_per_chunk (default 128 MiB): split them instead.
    # Measured: no lower peak (402 MB); 0 aborts onnxruntime (RegionFor).
    Config("arena-split-1m", "ORT arena, kSameAsRequested, split chunks wasting >= 1 MiB",
          arena_cfg={**ARENA_SAME_AS_REQUESTED, "max_dead_bytes_per_chunk": 1 << 20}),
    Config("jemalloc", "lean + jemalloc (default decay 10 s)", allocator="jemalloc"),
    Config("jemalloc-nodecay", "lean + jemalloc, dirty/muzzy decay 0", allocator="jemalloc",
          env=JEMALLOC_NO_DECAY),
    Config("jemalloc-bg", "lean + jemalloc, background purge thread, 1 s decay",
          allocator="jemalloc", env=JEMALLOC_BACKGROUND),
    Config("mimalloc", "lean + mimalloc (default purge delay)", allocator="mimalloc"),
    Config("mimalloc-keep", "lean + mimalloc, reserved arena, never decommitted",
          allocator="mimalloc", env=MIMALLOC_KEEP),
    Config("jemalloc-keep", "lean + jemalloc, big blocks reused, purged after 60 s idle",
          allocator="jemalloc", env=JEMALLOC_KEEP),
    Config("jemalloc-keep-1arena", "jemalloc-keep with a single arena",
          allocator="jemalloc", env=JEMALLOC_KEEP_ONE_ARENA),
    Config("glibc-heap-only", "lean, glibc without mmap, heap never trimmed, one arena",
          env=GLIBC_HEAP_ONLY),
    Config("jemalloc-retain", "lean + jemalloc, freed pages never given back",
          allocator="jemalloc", env=JEMALLOC_RETAIN),
    Config("heap-only-pattern", "glibc-heap-only + ORT memory pattern (one planned block)",
          memory_pattern=True, env=GLIBC_HEAP_ONLY),
    Config("no-spin", "service-now, intra-op threads do not spin", allow_spinning=False,
          env=SERVICE_MALLOC_ENV),
    Config("arena-pattern-no-spin", "arena-pattern-same-size, threads do not spin",
          memory_pattern=True, arena_cfg=ARENA_SAME_AS_REQUESTED, allow_spinning=False),
    # Session knobs, each on top of the best lean point (mmap-64k-hugetlb).
    Config("hugetlb-threads-1", "mmap-64k-hugetlb with 1 intra-op thread", intra_op_threads=1,
          env=LEAN_HUGETLB_ENV),
    Config("hugetlb-no-spin", "mmap-64k-hugetlb, intra-op threads do not spin",
          allow_spinning=False, env=LEAN_HUGETLB_ENV),
    Config("hugetlb-no-prepack", "mmap-64k-hugetlb + session.disable_prepacking",
          prepacking=False, env=LEAN_HUGETLB_ENV),
    Config("hugetlb-iobinding", "mmap-64k-hugetlb + IOBinding, preallocated input/output",
          iobinding=True, env=LEAN_HUGETLB_ENV),
    Config("hugetlb-opt-basic", "mmap-64k-hugetlb, graph optimisation level basic",
          graph_optimization="basic", env=LEAN_HUGETLB_ENV),
    # The fp32 head's 1-channel outputs in onnxruntime's blocked layout are
    # padded 16x: the final Resize and Sigmoid make 64 MB each instead of 4.
    Config("hugetlb-no-nchwc", "mmap-64k-hugetlb without the NCHWc layout transformer",
          disabled_optimizers=("NchwcTransformer",), env=LEAN_HUGETLB_ENV),
    Config("hugetlb-pattern", "mmap-64k-hugetlb + memory pattern (one planned block per run)",
          memory_pattern=True, env=LEAN_HUGETLB_ENV),
    Config("hugetlb-pattern-no-spin", "hugetlb-pattern, threads do not spin",
          memory_pattern=True, allow_spinning=False, env=LEAN_HUGETLB_ENV),
    Config("pattern-no-spin", "pattern-only, threads do not spin (no THP)",
          memory_pattern=True, allow_spinning=False, env=SERVICE_MALLOC_ENV),
    Config("jemalloc-retain-no-spin", "jemalloc-retain, threads do not spin",
          allocator="jemalloc", allow_spinning=False, env=JEMALLOC_RETAIN),
    # The service's own point (spin-stop, no NCHWc) with bench/thpalign.c:
    # blocks >= 2 MiB on 2 MiB-aligned mappings, so huge pages cover them
    # whole; nothing kept between runs (2026-12-02-speed.md).
    Config("service-thpalign", "the service's options + bench/thpalign.c (aligned THP blocks)",
          spin_stop=True, disabled_optimizers=("NchwcTransformer",), env=LEAN_HUGETLB_ENV,
          allocator="thpalign"),
    # The service's own options with and without its arena (ORT_ARENA_MB).
    Config("service-lean", "the service's options, no arena (ORT_ARENA_MB=0)",
          spin_stop=True, disabled_optimizers=("NchwcTransformer",), env=LEAN_HUGETLB_ENV),
    Config("service-arena", "the service's options + its arena (ORT_ARENA_MB=192, the default)",
          spin_stop=True, disabled_optimizers=("NchwcTransformer",), env=LEAN_HUGETLB_ENV,
          arena_mb=192),
    # Measured: as fast, 345 MB bare (kSameAsRequested ignores the first size).
    Config("service-arena-same", "the service's options + a shared arena, kSameAsRequested",
          spin_stop=True, disabled_optimizers=("NchwcTransformer",), env=LEAN_HUGETLB_ENV,
          arena_cfg=ARENA_SAME_AS_REQUESTED),
)

# A short list for `--quick`: the reference, the service with and without its arena, and
# two that keep memory.
QUICK = ("ort-defaults", "service-arena", "service-lean", "glibc-heap-only", "jemalloc-retain")

BY_NAME = {config.name: config for config in CANDIDATES}
