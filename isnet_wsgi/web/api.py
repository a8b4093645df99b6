"""The endpoints under /api/bg: what each one reads, checks and answers."""

from __future__ import annotations

import gc
import hmac
import io
import os
import time
from dataclasses import dataclass
from typing import Callable

from .. import __version__
from ..config import Settings
from ..file_names import split_file_name
from ..image.errors import (
    DecodeBudgetExceeded,
    ImageTooLarge,
    InvalidImage,
    UnsupportedImage,
)
from ..model.segmenter import InferenceTimeout, Segmenter
from ..options import OptionError, cache_key_part, color_options, remove_options
from ..pipeline import Output, Pipeline
from ..runtime import cgroup, memory
from ..runtime.cache import OffHeapBytes, ResultCache, digest
from ..runtime.metrics import CounterView, Gauge
from .headers import parse_options_header
from .http import (
    BadRequest,
    HTTPError,
    PayloadTooLarge,
    Request,
    Response,
    ServiceUnavailable,
    Unauthorized,
    UnsupportedMediaType,
    attachment_header,
)
from .monitoring import MemoryGuard, Monitor
from .multipart import (
    BoundaryError,
    Form,
    FormFile,
    MultipartError,
    MultipartLimitError,
    NotMultipartError,
    boundary_from_content_type,
    read_form,
)

# Room for the form's other fields and part headers next to the file itself.
FORM_OVERHEAD_BYTES = 64 * 1024
# Read size for a raw (non-multipart) body.
RAW_CHUNK_BYTES = 64 * 1024
# Seconds kept back from the request timeout for decoding, encoding and sending.
RESPONSE_MARGIN_S = 5.0
# The least inference time a request gets: a request whose budget is spent
# (a short timeout, a long upload) is answered 503 at once, not killed.
MIN_INFERENCE_BUDGET_S = 0.1
_IMAGE_ERRORS = {
    ImageTooLarge: PayloadTooLarge,
    DecodeBudgetExceeded: PayloadTooLarge,
    UnsupportedImage: UnsupportedMediaType,
    InvalidImage: BadRequest,
}


class BackgroundAPI:
    """Handlers for every /api/bg route, sharing one settings object and model."""

    def __init__(self, settings: Settings, segmenter: Segmenter, monitor: Monitor,
                 memory_guard: MemoryGuard):
        self.settings = settings
        self.segmenter = segmenter
        self.monitor = monitor
        self.memory_guard = memory_guard
        self.pipeline = Pipeline(settings, segmenter,
                                 observe_inference_s=monitor.inference.observe)
        self.cache: ResultCache[_CachedOutput] = ResultCache(
            settings.cache_bytes, size_of=lambda cached: len(cached.body))
        monitor.registry.add(CounterView(
            "isnet_cache_requests_total", "Result cache lookups, by result (hit, miss).",
            ("result",), lambda: {("hit",): self.cache.hits, ("miss",): self.cache.misses}))
        monitor.registry.add(Gauge("isnet_cache_bytes", "Bytes of results in the cache.",
                                   lambda: self.cache.bytes))

    # --- GET ---------------------------------------------------------------

    def health(self, request: Request) -> Response:
        body = {"status": "healthy", "memory_mb": memory.rss_mb(),
                "model_loaded": self.segmenter.loaded}
        if self.memory_guard.over_limit:
            # Still serving (200): the guard recycles the worker after a request.
            body["status"] = "degraded"
            body["reason"] = f"memory above MEMORY_LIMIT_MB={self.settings.memory_limit_mb}"
        if not self.segmenter.loaded:
            body["status"] = "unhealthy"
            body["reason"] = self.segmenter.error or "the model session is not started"
            return Response.json(body, status=503)
        return Response.json(body)

    def status(self, request: Request) -> Response:
        settings = self.settings
        return Response.json({
            "status": "ready" if self.segmenter.loaded else "starting",
            "version": __version__,
            "model": self.segmenter.name,
            "model_sha256": self.segmenter.sha256,
            "model_load_s": round(self.segmenter.load_seconds, 3),
            "memory": {
                "rss_mb": memory.rss_mb(),
                "peak_rss_mb": memory.peak_rss_mb(),
                "limit_mb": settings.memory_limit_mb,
                # The container's (cgroup's) memory limit; None when there is none.
                "cgroup_limit_mb": cgroup.memory_limit_mb(),
                "model_loaded": self.segmenter.loaded,
                # onnxruntime's arena kept between requests, MiB; 0 when none.
                "arena_mb": self.segmenter.options.arena_mb,
                # glibc's heap kept for requests' buffers, MiB; 0 when none.
                "request_heap_mb": self.segmenter.options.request_heap_mb,
            },
            "max_file_size_mb": settings.max_upload_mb,
            "max_dimension": settings.max_dimension_px,
            "max_image_pixels": settings.max_image_pixels,
            "allowed_extensions": list(settings.allowed_extensions),
            "cache": self.cache.stats(),
            "request_timeout_s": settings.request_timeout_s,
            "threads": settings.intra_op_threads,
            # The container's CPU quota, in CPUs (None: none); the default threads follow it.
            "cpu_quota": cgroup.cpu_limit(),
            "uptime_s": round(time.time() - self.monitor.started_at, 1),
            "requests_served": self.monitor.requests_served,
            "worker_starts": self.monitor.worker_starts.value,
            "worker_pid": os.getpid(),
            "session_pid": self.segmenter.session_pid,
            "auth_required": settings.api_key is not None,
            "settings": settings.public(),
        })

    # --- POST --------------------------------------------------------------

    def remove(self, request: Request) -> Response:
        upload = self._upload(request)
        options = _checked(remove_options, upload.values, ceiling_px=self.settings.max_dimension_px,
                           refine_default=self.settings.refine_default)
        return self._answer("remove", upload, options, lambda: self.pipeline.remove(
            upload.file.data, options, timeout_s=self._inference_budget_s(request)))

    def change_color(self, request: Request) -> Response:
        upload = self._upload(request, background=True)
        options = _checked(color_options, upload.values, ceiling_px=self.settings.max_dimension_px,
                           refine_default=self.settings.refine_default,
                           background_file=upload.background is not None)
        background = upload.background.data if upload.background else None
        return self._answer("change_color", upload, options, lambda: self.pipeline.change_color(
            upload.file.data, options, background_data=background,
            timeout_s=self._inference_budget_s(request)))

    def clear_cache(self, request: Request) -> Response:
        self._authorise(request)
        before_mb = memory.rss_mb()
        # The results first, so the collector and malloc_trim can give them back.
        cached = self.cache.clear()
        collected = gc.collect()
        trimmed = memory.trim()
        return Response.json({
            "status": "cleared",
            "cleared": {"results": cached, "gc_objects": collected, "malloc_trim": trimmed},
            "memory_before_mb": before_mb,
            "memory_after_mb": memory.rss_mb(),
        })

    # --- Steps shared by the POST handlers ----------------------------------

    def _answer(self, endpoint: str, upload: Upload, options,
                make: Callable[[], Output]) -> Response:
        """The result from the cache, or made (and cached), as a download."""
        key = output = None
        if self.cache.enabled:
            # PERF: hashing the upload (up to MAX_UPLOAD_MB) only when it can pay off.
            key = (endpoint, digest(upload.file.data), cache_key_part(options),
                   digest(upload.background.data) if upload.background else "")
            cached = self.cache.get(key)
            output = cached.output() if cached is not None else None
        hit = output is not None
        if output is None:
            output = self._run(make)
            if key is not None:
                self.cache.put(key, _CachedOutput.of(output))
        headers = [("Content-Disposition", attachment_header(
            output.file_name(upload.file.filename)))]
        if self.cache.enabled:
            headers.append(("X-Cache", "hit" if hit else "miss"))
        return Response(output.body, content_type=output.content_type, headers=headers)

    def _run(self, make: Callable[[], Output]) -> Output:
        if not self.segmenter.loaded:
            raise ServiceUnavailable(self.segmenter.error or "The model is not loaded yet.",
                                     code="model_unavailable", retry_after_s=5)
        try:
            return make()
        except InvalidImage as error:
            raise _IMAGE_ERRORS[type(error)](str(error), code=error.code) from None
        except InferenceTimeout:
            raise ServiceUnavailable("The image took too long to process.",
                                     code="timeout", retry_after_s=10) from None

    def _authorise(self, request: Request) -> None:
        expected = self.settings.api_key
        if expected is None:
            return
        given = request.header("Authorization") or ""
        scheme, _, token = given.partition(" ")
        # Constant-time compare: the answer's timing says nothing about the key.
        if not (scheme.lower() == "bearer"
                and hmac.compare_digest(token.strip().encode(), expected.encode())):
            raise Unauthorized("Send the API key as 'Authorization: Bearer <key>'.")

    def _upload(self, request: Request, *, background: bool = False) -> Upload:
        """The image (and background) with the options: from a form or a raw body."""
        self._authorise(request)
        file_fields = ("file", "bg_file") if background else ("file",)
        values = {name: given[0] for name, given in request.query.items()}
        mimetype, _ = parse_options_header(request.header("Content-Type"))
        if mimetype.startswith("image/") or mimetype == "application/octet-stream":
            # A raw body: the bytes are the image, the options are in the query.
            _refuse_files_sent_as_text(values, file_fields)
            return Upload(FormFile("file", "image", mimetype, self._read_raw(request)), values)
        form = self._read_form(request, files=2 if background else 1)
        values.update({name: given[0] for name, given in form.fields.items()})
        _refuse_files_sent_as_text(values, file_fields)
        return Upload(self._one_file(form, "file", required=True), values,
                      self._one_file(form, "bg_file") if background else None)

    def _read_raw(self, request: Request) -> bytes:
        # The declared length is refused before reading, the streamed bytes counted.
        reader = request.body_reader(self.settings.max_upload_bytes)
        body = io.BytesIO()  # PERF: getvalue() hands over its buffer without a copy
        while chunk := reader.read(RAW_CHUNK_BYTES):
            body.write(chunk)
        return body.getvalue()

    def _read_form(self, request: Request, *, files: int) -> Form:
        try:
            boundary = boundary_from_content_type(request.header("Content-Type"))
        except NotMultipartError as error:
            raise UnsupportedMediaType(
                "Send the image as multipart/form-data in a field named 'file', or as the "
                f"raw body with Content-Type image/* ({error}).", code="not_multipart") from None
        except BoundaryError as error:
            # NOTE: the media type is supported, the request malformed: 400, not 415.
            raise BadRequest(f"The Content-Type has no usable boundary ({error}); let the "
                             "client write it (curl -F, a browser form).",
                             code=error.code) from None
        limit = self.settings.max_upload_bytes
        reader = request.body_reader(files * limit + FORM_OVERHEAD_BYTES)
        try:
            return read_form(reader.read, boundary, max_file_bytes=limit)
        except MultipartLimitError as error:
            # Each limit its own code and message, so the client knows which one it hit.
            raise PayloadTooLarge(f"The form is over a limit: {error}.",
                                  code=error.code) from None
        except MultipartError as error:
            raise BadRequest(f"The multipart body is malformed: {error}",
                             code="malformed_multipart") from None

    def _one_file(self, form: Form, field: str, *, required: bool = False) -> FormFile | None:
        files = form.files.get(field, [])
        if not files and required:
            raise BadRequest(f"No file was uploaded in the field '{field}'.",
                             code="missing_file")
        if len(files) > 1:
            raise BadRequest(f"Send one file per field ('{field}').", code="too_many_files")
        if files:
            self._check_extension(files[0].filename)
        return files[0] if files else None

    def _check_extension(self, filename: str) -> None:
        _, suffix = split_file_name(filename)
        if suffix and suffix not in self.settings.allowed_extensions:
            raise UnsupportedMediaType(
                f"Files ending in .{suffix[:16]} are not accepted; allowed: "
                f"{', '.join(self.settings.allowed_extensions)}.",
                code="unsupported_extension")

    def _inference_budget_s(self, request: Request) -> float:
        # NOTE: counted from the request's arrival: the body read (up to
        # UPLOAD_TIMEOUT_S) comes out of the same REQUEST_TIMEOUT_S.
        spent_s = time.monotonic() - request.received_at
        return max(MIN_INFERENCE_BUDGET_S,
                   self.settings.request_timeout_s - RESPONSE_MARGIN_S - spent_s)


@dataclass(frozen=True)
class Upload:
    """What a POST carried: the image, the text options, an optional background."""

    file: FormFile
    values: dict[str, str]
    background: FormFile | None = None


@dataclass(frozen=True)
class _CachedOutput:
    """An Output as the result cache holds it: its bytes off malloc's heap."""

    body: OffHeapBytes
    content_type: str
    prefix: str
    extension: str

    @classmethod
    def of(cls, output: Output) -> "_CachedOutput":
        return cls(OffHeapBytes(output.body), output.content_type, output.prefix,
                   output.extension)

    def output(self) -> Output:
        return Output(self.body.to_bytes(), self.content_type, self.prefix, self.extension)


def _checked(parse, values: dict[str, str], **limits):
    """Options parsed from the request's text; a bad value is a 400 naming it."""
    try:
        return parse(values, **limits)
    except OptionError as error:
        raise BadRequest(str(error), code=error.code) from None


def _refuse_files_sent_as_text(values: dict[str, str], file_fields: tuple[str, ...]) -> None:
    """A file field that came as text (a form field, the query) is a 400, never ignored."""
    for name in file_fields:
        if name in values:
            raise BadRequest(f"'{name}' arrived as text; send the image as a file part of a "
                             f"multipart/form-data form (curl -F {name}=@photo.jpg).",
                             code=f"{name}_not_a_file")

