"""Settings: one frozen dataclass built from the environment, validated once.

Each setting is declared once, as a field of ``Settings``: its name, type
and default, and in ``setting(...)`` its environment variable, range and a
one-line meaning. The environment reader, ``GET /api/bg/status``, the
OpenAPI document and the README's settings table (checked by a test) all
read that declaration.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from pathlib import Path
from typing import Any, Callable, Mapping

from .numerals import parse_boolean, parse_decimal_number, parse_whole_number
from .runtime import cgroup

PROJECT_ROOT = Path(__file__).resolve().parent.parent
MODEL_FILE_NAME = "isnet-general-tiny.onnx"
# An installed package (`pip install .`, setup.py) carries the model inside it;
# a checkout keeps it where `make model` builds it.
_INSTALLED_MODEL_PATH = Path(__file__).resolve().parent / "models" / MODEL_FILE_NAME
DEFAULT_MODEL_PATH = (_INSTALLED_MODEL_PATH if _INSTALLED_MODEL_PATH.is_file()
                      else PROJECT_ROOT / "models" / MODEL_FILE_NAME)
DEFAULT_EXTENSIONS = ("png", "jpg", "jpeg", "gif", "bmp", "tiff", "webp")
MIB = 1024 * 1024


class ConfigError(RuntimeError):
    """A setting is missing or out of range. Start-up stops with its message."""


def _default_threads() -> int:
    """The CPUs this process may run on, not the host's, and no more than its
    cgroup's CPU quota: whole CPUs, at least one.

    NOTE: a container limited by cpuset reports the right number in
    sched_getaffinity; one limited by a quota (docker --cpus, a Kubernetes
    limit) still sees every CPU of the host. Under a quota of one CPU on two,
    two intra-op threads ran a 1024-px inference in 1.18-1.20 s, one thread
    in 1.03-1.07 s; on a host of 32 CPUs the service would start 32.
    """
    cpus = len(os.sched_getaffinity(0))
    quota = cgroup.cpu_limit()
    if quota is not None:
        cpus = min(cpus, int(quota))
    return max(1, cpus)


@dataclasses.dataclass(frozen=True)
class Declaration:
    """What a setting is, beyond its field's name, type and default."""

    env: str
    meaning: str
    low: float | None = None
    high: float | None = None
    # Never logged or shown: the value is replaced by "set" or None.
    secret: bool = False
    # How the README writes a default computed at start-up.
    default_text: str | None = None


def setting(default: Any = dataclasses.MISSING, *, env: str, meaning: str,
            low: float | None = None, high: float | None = None, secret: bool = False,
            default_factory: Callable[[], Any] | None = None,
            default_text: str | None = None) -> Any:
    """A Settings field with its declaration in the field's metadata."""
    declaration = Declaration(env, meaning, low, high, secret, default_text)
    if default_factory is not None:
        return dataclasses.field(default_factory=default_factory, repr=not secret,
                                 metadata={"setting": declaration})
    return dataclasses.field(default=default, repr=not secret,
                             metadata={"setting": declaration})


@dataclasses.dataclass(frozen=True)
class Settings:
    # --- HTTP ---------------------------------------------------------------
    port: int = setting(5000, env="PORT", low=1, high=65535,
                        meaning="port to listen on (all interfaces)")
    max_upload_mb: float = setting(8.0, env="MAX_UPLOAD_MB", low=0.001, high=1024,
                                   meaning="largest accepted file, MB")
    request_timeout_s: int = setting(
        60, env="REQUEST_TIMEOUT_S", low=1, high=3600,
        meaning="seconds a request may take from its arrival; inference stops 5 s before")
    # One client's share of the single worker (isnet_wsgi/client_limits.py):
    # the head within this many seconds of connecting, then the body at a
    # minimum average rate after a grace, and whole within its own timeout.
    request_head_timeout_s: float = setting(
        5.0, env="REQUEST_HEAD_TIMEOUT_S", low=0.1, high=600,
        meaning="seconds from connecting for the request line and headers")
    upload_grace_s: float = setting(2.0, env="UPLOAD_GRACE_S", low=0, high=600,
                                    meaning="seconds of the body before its minimum rate applies")
    min_upload_rate_kb_s: float = setting(
        32.0, env="MIN_UPLOAD_RATE_KB_S", low=0.001, high=1_000_000,
        meaning="average KiB/s the body (and the answer) must keep up after the grace")
    upload_timeout_s: float = setting(20.0, env="UPLOAD_TIMEOUT_S", low=0.1, high=3600,
                                      meaning="seconds the whole body may take")
    # Connections waiting while the worker serves another are read as their
    # bytes arrive (isnet_wsgi/server/connections.py), within these bounds.
    max_held_connections: int = setting(
        256, env="MAX_HELD_CONNECTIONS", low=1, high=100_000,
        meaning="connections held at once; past it the oldest unfinished one gets a 503")
    waiting_bodies_mb: float = setting(
        32.0, env="WAITING_BODIES_MB", low=0, high=65536,
        meaning="memory for upload bodies read ahead while the worker is busy, MiB, in total; "
                "0 streams each body to the worker as before")
    api_key: str | None = setting(
        None, env="API_KEY", secret=True,
        meaning="when set, the POST endpoints need 'Authorization: Bearer <key>'")

    # --- Images -------------------------------------------------------------
    max_dimension_px: int = setting(1024, env="MAX_DIMENSION", low=16, high=8192,
                                    meaning="long side of the output, px")
    max_image_pixels: int = setting(
        25_000_000, env="MAX_IMAGE_PIXELS", low=1024, high=500_000_000,
        meaning="width x height budget, checked from the file's header")
    # Memory one image's decode may take (pixels, decoder buffers, shrink),
    # estimated from its header; above it the upload is refused (413).
    decode_budget_mb: int = setting(
        160, env="DECODE_BUDGET_MB", low=16, high=65536,
        meaning="memory one image's decode may take, estimated from its header, MiB")
    allowed_extensions: tuple[str, ...] = setting(
        DEFAULT_EXTENSIONS, env="ALLOWED_EXTENSIONS",
        meaning="file name endings and formats accepted")
    # Encoded results kept per worker for repeated requests; 0 turns it off.
    cache_mb: float = setting(8.0, env="CACHE_MB", low=0, high=4096,
                              meaning="memory for each worker's result cache, MB; 0 is off")
    refine_default: bool = setting(
        False, env="REFINE_DEFAULT",
        meaning="whether masks are edge-refined when a request does not say")

    # --- Model and inference ------------------------------------------------
    model_path: Path = setting(DEFAULT_MODEL_PATH, env="MODEL_PATH",
                               default_text="models/isnet-general-tiny.onnx",
                               meaning="the model; its manifest is the same path with .json")
    intra_op_threads: int = setting(env="INTRA_OP_THREADS", low=1, high=256,
                                    default_factory=_default_threads,
                                    default_text="CPUs available (at most the CPU quota)",
                                    meaning="onnxruntime's threads for one inference")
    ort_cpu_arena: bool = setting(False, env="ORT_CPU_ARENA",
                                  meaning="onnxruntime's CPU memory arena")
    # PERF: one arena kept between requests: 0.79x the latency of fresh
    # memory each run at the same worker peak for a 1024-px request (241 vs
    # 242 MB), ~100 MB more in the worst case (docs/memory.md);
    # hence only in containers of ARENA_MIN_MEMORY_MB or more.
    ort_arena_mb: int = setting(
        192, env="ORT_ARENA_MB", low=0, high=1 << 20,
        meaning="first region of the arena onnxruntime keeps between requests, MiB; 0 is none")
    arena_min_memory_mb: int = setting(
        512, env="ARENA_MIN_MEMORY_MB", low=0, high=1 << 30,
        meaning="the container memory limit below which the arena is not used, MiB")
    ort_memory_pattern: bool = setting(False, env="ORT_MEMORY_PATTERN",
                                       meaning="onnxruntime's memory pattern planning")
    malloc_mmap_threshold_kb: int = setting(
        64, env="MALLOC_MMAP_THRESHOLD_KB", low=0, high=32 * 1024,
        meaning="glibc's M_MMAP_THRESHOLD set in the worker, KiB; 0 is glibc's default")
    # PERF: a request's own buffers (decode, resize, mask, cut-out, encode:
    # ~40 MB in all) mapped afresh cost ~10,000 page faults per 1024-px
    # request; from a heap kept between requests, 3-6: 0.95-0.96x the
    # latency for +4 MB of peak (docs/memory.md). Each of those
    # faults was a fresh 2 MiB huge page until the heap kept its top pad
    # too (memory.keep_heap): 4 a request now.
    request_heap_mb: int = setting(
        16, env="REQUEST_HEAP_MB", low=0, high=32,
        meaning="with the arena, once the session is made: buffers below this size come "
                "from glibc's heap, which keeps this much free between requests, MiB; 0 maps "
                "each buffer over MALLOC_MMAP_THRESHOLD_KB afresh")

    # --- Worker lifecycle ---------------------------------------------------
    max_requests: int = setting(200, env="MAX_REQUESTS", low=0, high=10_000_000,
                                meaning="requests before the worker is recycled; 0 is never")
    max_requests_jitter: int = setting(
        50, env="MAX_REQUESTS_JITTER", low=0, high=10_000_000,
        meaning="random extra requests, so replicas do not recycle together")
    memory_limit_mb: int = setting(
        450, env="MEMORY_LIMIT_MB", low=64, high=1_000_000,
        meaning="RSS above which the worker trims, then is recycled after the response, MB")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * MIB)

    @property
    def cache_bytes(self) -> int:
        return int(self.cache_mb * MIB)

    @property
    def decode_budget_bytes(self) -> int:
        return self.decode_budget_mb * MIB

    @property
    def manifest_path(self) -> Path:
        return self.model_path.with_suffix(".json")

    @classmethod
    def declarations(cls) -> list[tuple[dataclasses.Field, type, Declaration]]:
        """(field, type, declaration) of every setting, in declaration order."""
        types = typing.get_type_hints(cls)
        return [(field, types[field.name], field.metadata["setting"])
                for field in dataclasses.fields(cls)]

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if environ is None else environ
        given = {}
        for field, kind, declaration in cls.declarations():
            raw = (env.get(declaration.env) or "").strip()
            if raw:
                given[field.name] = _parse(declaration, kind, raw)
        return cls(**given)

    def public(self) -> dict:
        """The settings as ``/api/bg/status`` shows them (never a secret)."""
        return {field.name: shown_value(declaration, getattr(self, field.name))
                for field, _, declaration in self.declarations()}


def shown_value(declaration: Declaration, value: Any) -> Any:
    """A setting's value as JSON shows it."""
    if declaration.secret:
        return "set" if value else None
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    return value


def _parse(declaration: Declaration, kind: type, raw: str) -> Any:
    """The value of ``NAME=raw`` for a setting of this type, range-checked."""
    name = declaration.env
    if kind is Path:
        return Path(raw)
    if kind not in _READERS:  # str, or str | None
        return raw
    read, expected = _READERS[kind]
    try:
        value = read(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} {_why_not(declaration, read, raw, expected)}") from None
    if declaration.low is not None and not declaration.low <= value <= declaration.high:
        raise ConfigError(f"{name}={value} is out of range "
                          f"[{declaration.low:g}, {declaration.high:g}]")
    return value


def _why_not(declaration: Declaration, read: Callable[[str], Any], raw: str,
             expected: str) -> str:
    """Why a value was refused: CACHE_MB=-1 is a number, only out of range."""
    stripped = raw.strip()
    if stripped.startswith("-"):
        try:
            read(stripped[1:])
        except ValueError:
            return expected
        if declaration.low is not None:
            return f"is out of range [{declaration.low:g}, {declaration.high:g}]"
        return "may not be negative"
    return expected


def _words(raw: str) -> tuple[str, ...]:
    words = tuple(w.strip().lower().lstrip(".") for w in raw.split(",") if w.strip())
    if not words:
        raise ValueError("lists no values")
    return words


# A setting's type -> its reader and what a value that fails it is not.
_READERS: dict[Any, tuple[Callable[[str], Any], str]] = {
    bool: (parse_boolean, "is not one of 1/0, true/false, yes/no, on/off"),
    int: (parse_whole_number, "is not a whole number"),
    float: (parse_decimal_number, "is not a number"),
    tuple[str, ...]: (_words, "lists no values"),
}
