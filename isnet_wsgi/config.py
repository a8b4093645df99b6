"""Settings: one frozen dataclass built from the environment, validated once.

Every limit the service enforces is here, with its default, and is shown by
``GET /api/bg/status`` and in the README's settings table.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Mapping

from .numerals import parse_decimal_number, parse_whole_number

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL_PATH = PROJECT_ROOT / "models" / "isnet-general-tiny.onnx"
DEFAULT_EXTENSIONS = ("png", "jpg", "jpeg", "gif", "bmp", "tiff", "webp")


class ConfigError(RuntimeError):
    """A setting is missing or out of range. Start-up stops with its message."""


def _default_threads() -> int:
    # NOTE: the CPUs this process may run on, not the host's: a container
    # limited by cpuset reports the right number here.
    return max(1, len(os.sched_getaffinity(0)))


@dataclasses.dataclass(frozen=True)
class Settings:
    # HTTP
    port: int = 5000
    max_upload_mb: float = 8.0
    request_timeout_s: int = 60
    # One client's share of the single worker (isnet_wsgi/client_limits.py):
    # the head within this many seconds of connecting, then the body at a
    # minimum average rate after a grace, and whole within its own timeout.
    request_head_timeout_s: float = 5.0
    upload_grace_s: float = 2.0
    min_upload_rate_kb_s: float = 32.0
    upload_timeout_s: float = 20.0
    # Never logged or shown: repr=False keeps it out of tracebacks and logs.
    api_key: str | None = dataclasses.field(default=None, repr=False)

    # Images
    max_dimension_px: int = 1024
    max_image_pixels: int = 25_000_000
    # Memory one image's decode may take (pixels, decoder buffers, shrink),
    # estimated from its header; above it the upload is refused (413).
    decode_budget_mb: int = 160
    allowed_extensions: tuple[str, ...] = DEFAULT_EXTENSIONS
    # Encoded results kept per worker for repeated requests; 0 turns it off.
    cache_mb: float = 8.0
    # Whether remove/change_color refine the mask's edges when a request
    # does not say (refine=true|false).
    refine_default: bool = False

    # Model and inference
    model_path: Path = DEFAULT_MODEL_PATH
    intra_op_threads: int = dataclasses.field(default_factory=_default_threads)
    ort_cpu_arena: bool = False
    ort_memory_pattern: bool = False
    malloc_mmap_threshold_kb: int = 64

    # Worker lifecycle
    max_requests: int = 200
    max_requests_jitter: int = 50
    memory_limit_mb: int = 450

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def cache_bytes(self) -> int:
        return int(self.cache_mb * 1024 * 1024)

    @property
    def decode_budget_bytes(self) -> int:
        return self.decode_budget_mb * 1024 * 1024

    @property
    def manifest_path(self) -> Path:
        return self.model_path.with_suffix(".json")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if environ is None else environ
        reader = _EnvReader(env)
        settings = cls(
            port=reader.int("PORT", 5000, low=1, high=65535),
            max_upload_mb=reader.float("MAX_UPLOAD_MB", 8.0, low=0.001, high=1024),
            request_timeout_s=reader.int("REQUEST_TIMEOUT_S", 60, low=1, high=3600),
            request_head_timeout_s=reader.float("REQUEST_HEAD_TIMEOUT_S", 5.0, low=0.1, high=600),
            upload_grace_s=reader.float("UPLOAD_GRACE_S", 2.0, low=0, high=600),
            min_upload_rate_kb_s=reader.float("MIN_UPLOAD_RATE_KB_S", 32.0, low=0.001,
                                              high=1_000_000),
            upload_timeout_s=reader.float("UPLOAD_TIMEOUT_S", 20.0, low=0.1, high=3600),
            api_key=env.get("API_KEY") or None,
            max_dimension_px=reader.int("MAX_DIMENSION", 1024, low=16, high=8192),
            max_image_pixels=reader.int("MAX_IMAGE_PIXELS", 25_000_000, low=1024, high=500_000_000),
            decode_budget_mb=reader.int("DECODE_BUDGET_MB", 160, low=16, high=65536),
            allowed_extensions=reader.words("ALLOWED_EXTENSIONS", DEFAULT_EXTENSIONS),
            cache_mb=reader.float("CACHE_MB", 8.0, low=0, high=4096),
            refine_default=reader.bool("REFINE_DEFAULT", False),
            model_path=Path(env.get("MODEL_PATH") or DEFAULT_MODEL_PATH),
            intra_op_threads=reader.int("INTRA_OP_THREADS", _default_threads(), low=1, high=256),
            ort_cpu_arena=reader.bool("ORT_CPU_ARENA", False),
            ort_memory_pattern=reader.bool("ORT_MEMORY_PATTERN", False),
            malloc_mmap_threshold_kb=reader.int("MALLOC_MMAP_THRESHOLD_KB", 64, low=0, high=32 * 1024),
            max_requests=reader.int("MAX_REQUESTS", 200, low=0, high=10_000_000),
            max_requests_jitter=reader.int("MAX_REQUESTS_JITTER", 50, low=0, high=10_000_000),
            memory_limit_mb=reader.int("MEMORY_LIMIT_MB", 450, low=64, high=1_000_000),
        )
        return settings

    def public(self) -> dict:
        """The settings as ``/api/bg/status`` shows them (never the API key)."""
        shown = dataclasses.asdict(self)
        shown["model_path"] = str(self.model_path)
        shown["allowed_extensions"] = list(self.allowed_extensions)
        shown["api_key"] = "set" if self.api_key else None
        return shown


class _EnvReader:
    """Typed, range-checked reads of environment variables."""

    _TRUE = {"1", "true", "yes", "on"}
    _FALSE = {"0", "false", "no", "off"}

    def __init__(self, env: Mapping[str, str]):
        self._env = env

    def _raw(self, name: str) -> str | None:
        value = self._env.get(name)
        return None if value is None or value.strip() == "" else value.strip()

    def int(self, name: str, default: int, *, low: int, high: int) -> int:
        raw = self._raw(name)
        if raw is None:
            return default
        try:
            value = parse_whole_number(raw)
        except ValueError:
            raise ConfigError(f"{name}={raw!r} is not a whole number") from None
        return self._in_range(name, value, low, high)

    def float(self, name: str, default: float, *, low: float, high: float) -> float:
        raw = self._raw(name)
        if raw is None:
            return default
        try:
            value = parse_decimal_number(raw)
        except ValueError:
            raise ConfigError(f"{name}={raw!r} is not a number") from None
        return self._in_range(name, value, low, high)

    def bool(self, name: str, default: bool) -> bool:
        raw = self._raw(name)
        if raw is None:
            return default
        if raw.lower() in self._TRUE:
            return True
        if raw.lower() in self._FALSE:
            return False
        raise ConfigError(f"{name}={raw!r} is not one of 1/0, true/false, yes/no, on/off")

    def words(self, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
        raw = self._raw(name)
        if raw is None:
            return default
        words = tuple(w.strip().lower().lstrip(".") for w in raw.split(",") if w.strip())
        if not words:
            raise ConfigError(f"{name} lists no values")
        return words

    @staticmethod
    def _in_range(name, value, low, high):
        if not low <= value <= high:
            raise ConfigError(f"{name}={value} is out of range [{low}, {high}]")
        return value
