"""The endpoints under /api/bg: what each one reads, checks and answers."""

from __future__ import annotations

import gc
import hmac
import os
import time
from pathlib import PurePosixPath, PureWindowsPath

from PIL import Image

from . import __version__, imaging, memory
from .config import Settings
from .http import (BadRequest, HTTPError, PayloadTooLarge, Request, Response,
                   ServiceUnavailable, Unauthorized, UnsupportedMediaType,
                   attachment_header)
from .model import InferenceTimeout, Segmenter
from .monitoring import MemoryGuard, Monitor
from .multipart import (FormFile, MultipartError, MultipartLimitError,
                        boundary_from_content_type, read_form)

# Room for the form's other fields and part headers next to the file itself.
FORM_OVERHEAD_BYTES = 64 * 1024
# Seconds kept back from the request timeout for decoding, encoding and sending.
RESPONSE_MARGIN_S = 5.0
_IMAGE_ERRORS = {
    imaging.ImageTooLarge: PayloadTooLarge,
    imaging.UnsupportedImage: UnsupportedMediaType,
    imaging.InvalidImage: BadRequest,
}


class BackgroundAPI:
    """Handlers for every /api/bg route, sharing one settings object and model."""

    def __init__(self, settings: Settings, segmenter: Segmenter, monitor: Monitor,
                 memory_guard: MemoryGuard):
        self.settings = settings
        self.segmenter = segmenter
        self.monitor = monitor
        self.memory_guard = memory_guard
        self._formats = tuple(sorted({
            imaging.FORMAT_BY_EXTENSION[ext] for ext in settings.allowed_extensions
            if ext in imaging.FORMAT_BY_EXTENSION}))

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
                "model_loaded": self.segmenter.loaded,
            },
            "max_file_size_mb": settings.max_upload_mb,
            "max_dimension": settings.max_dimension_px,
            "max_image_pixels": settings.max_image_pixels,
            "allowed_extensions": list(settings.allowed_extensions),
            "request_timeout_s": settings.request_timeout_s,
            "threads": settings.intra_op_threads,
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
        image = self._decode(upload)
        mask = self._mask(image)
        png = imaging.encode(imaging.cutout(image, mask), "PNG")
        return Response(png, content_type="image/png", headers=[
            ("Content-Disposition", attachment_header(f"nobg_{_stem(upload.filename)}.png"))])

    def change_color(self, request: Request) -> Response:
        upload, form = self._upload_and_form(request)
        color_text = form.field("color") or request.query.get("color", ["#FFFFFF"])[0]
        try:
            rgb = imaging.parse_color(color_text)
        except ValueError as error:
            raise BadRequest(str(error), code="invalid_color") from None
        image = self._decode(upload)
        mask = self._mask(image)
        jpeg = imaging.encode(imaging.on_color(image, mask, rgb), "JPEG")
        return Response(jpeg, content_type="image/jpeg", headers=[
            ("Content-Disposition", attachment_header(f"color_{_stem(upload.filename)}.jpg"))])

    def clear_cache(self, request: Request) -> Response:
        self._authorise(request)
        before_mb = memory.rss_mb()
        collected = gc.collect()
        trimmed = memory.trim()
        return Response.json({
            "status": "cleared",
            "cleared": {"gc_objects": collected, "malloc_trim": trimmed},
            "memory_before_mb": before_mb,
            "memory_after_mb": memory.rss_mb(),
        })

    # --- Steps shared by the POST handlers ----------------------------------

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

    def _upload(self, request: Request) -> FormFile:
        return self._upload_and_form(request)[0]

    def _upload_and_form(self, request: Request):
        self._authorise(request)
        content_type = request.header("Content-Type")
        try:
            boundary = boundary_from_content_type(content_type)
        except MultipartError as error:
            raise UnsupportedMediaType(
                f"Send the image as multipart/form-data in a field named 'file' ({error}).",
                code="not_multipart") from None
        limit = self.settings.max_upload_bytes
        reader = request.body_reader(limit + FORM_OVERHEAD_BYTES)
        try:
            form = read_form(reader.read, boundary, max_file_bytes=limit)
        except MultipartLimitError as error:
            raise PayloadTooLarge(
                f"The upload exceeds a limit ({error.limit}); files may be at most "
                f"{self.settings.max_upload_mb:g} MB.", code="file_too_large") from None
        except MultipartError as error:
            raise BadRequest(f"The multipart body is malformed: {error}",
                             code="malformed_multipart") from None
        files = form.files.get("file", [])
        if not files:
            raise BadRequest("No file was uploaded in the field 'file'.", code="missing_file")
        if len(files) > 1:
            raise BadRequest("Send one file per request.", code="too_many_files")
        self._check_extension(files[0].filename)
        return files[0], form

    def _check_extension(self, filename: str) -> None:
        suffix = PurePosixPath(filename.replace("\\", "/")).suffix.lower().lstrip(".")
        if suffix and suffix not in self.settings.allowed_extensions:
            raise UnsupportedMediaType(
                f"Files ending in .{suffix[:16]} are not accepted; allowed: "
                f"{', '.join(self.settings.allowed_extensions)}.",
                code="unsupported_extension")

    def _decode(self, upload: FormFile) -> Image.Image:
        try:
            return imaging.decode(
                upload.data, formats=self._formats,
                max_pixels=self.settings.max_image_pixels,
                max_dimension_px=self.settings.max_dimension_px)
        except imaging.InvalidImage as error:
            raise _IMAGE_ERRORS[type(error)](str(error), code=error.code) from None

    def _mask(self, image: Image.Image) -> Image.Image:
        if not self.segmenter.loaded:
            raise ServiceUnavailable(self.segmenter.error or "The model is not loaded yet.",
                                     code="model_unavailable", retry_after_s=5)
        mean, std = self.segmenter.normalisation
        tensor = imaging.to_tensor(image, self.segmenter.input_size_px, mean=mean, std=std)
        started = time.perf_counter()
        try:
            output = self.segmenter.run(tensor, timeout_s=self._inference_budget_s())
        except InferenceTimeout:
            raise ServiceUnavailable("The image took too long to process.",
                                     code="timeout", retry_after_s=10) from None
        self.monitor.inference.observe(time.perf_counter() - started)
        return imaging.mask_from_output(output, image.size)

    def _inference_budget_s(self) -> float:
        return max(1.0, self.settings.request_timeout_s - RESPONSE_MARGIN_S)


def _stem(filename: str) -> str:
    """The file name without folders or extension, whatever the client's OS."""
    name = PureWindowsPath(PurePosixPath(filename).name).name
    return PurePosixPath(name).stem or "image"


__all__ = ["BackgroundAPI", "HTTPError"]
