"""POST /v1.0/removebg: remove.bg's API, so its clients work against this service.

The request is read as remove.bg reads it (multipart, urlencoded or JSON;
the key in X-Api-Key), the answer made by the same Pipeline as
/api/bg/remove (removebg_image.py), and every error answered in remove.bg's
shape, ``{"errors": [{"title", "code", "detail"}]}``, so its clients report it.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from urllib.parse import parse_qsl

from ..config import Settings
from .api import BackgroundAPI
from .auth import require_api_key_header
from .errors import BadRequest, HTTPError, PayloadTooLarge, UnsupportedMediaType, http_error
from .headers import parse_options_header
from .http import Request, attachment_header
from .multipart import boundary_from_content_type, read_form, size_text
from .removebg_image import render
from .removebg_options import FILE_PARAMETERS, JSON_TYPES, PARAMETERS, removebg_options
from .response import Response
from .results import foreground_sides, size_headers
from .upload import FORM_OVERHEAD_BYTES, single_values, upload_limit_text

# The body types remove.bg accepts.
FORM, URLENCODED, JSON = ("multipart/form-data", "application/x-www-form-urlencoded",
                          "application/json")
# Every parameter once, and a few more (so an unknown one is named, not counted).
MAX_PARTS = len(FILE_PARAMETERS) + 1 + len(PARAMETERS) + 4
# Statuses remove.bg's clients know; ours that they do not are answered as these.
_REMOVEBG_STATUS = {415: 400, 401: 403}


@dataclass(frozen=True)
class RemoveBgUpload:
    image: bytes
    background: bytes | None
    values: dict[str, str]


class RemoveBgAPI:
    """The one remove.bg endpoint, on the /api/bg endpoints' pipeline and cache."""

    def __init__(self, api: BackgroundAPI):
        self.api = api
        self.settings: Settings = api.settings

    def removebg(self, request: Request) -> Response:
        try:
            require_api_key_header(request, self.settings.api_key)
            upload = read_request(request, self.settings)
            options = removebg_options(upload.values, refine=self.settings.refine_default)
            if options.bg_color is not None and upload.background is not None:
                raise BadRequest("Send one background: bg_color or bg_image_file.",
                                 code="conflicting_background")
            output, hit = self.api.results.get_or_make(
                "removebg", (upload.image, upload.background), options,
                lambda: self.api.run(lambda: render(
                    self.api.pipeline, upload.image, upload.background, options,
                    timeout_s=self.api.inference_budget_s(request))))
        except Exception as exc:
            error = http_error(exc)
            if type(error) is HTTPError:
                raise  # a bug: the app logs it and answers its 500
            return removebg_error(error)
        headers = size_headers(output) + [("X-Credits-Charged", "0")]
        if hit is not None:
            headers.append(("X-Cache", "hit" if hit else "miss"))
        if wants_json(request.header("Accept")):
            box = {f"foreground_{side}": value for side, value in foreground_sides(output).items()}
            return Response.json({"data": {"result_b64": base64.b64encode(output.body).decode(),
                                           **box}}, headers=headers)
        headers.append(("Content-Disposition",
                        attachment_header(f"{output.prefix}.{output.extension}")))
        return Response(output.body, content_type=output.content_type, headers=headers)


def removebg_error(error: HTTPError) -> Response:
    """An error as remove.bg writes it; the status one its clients know."""
    body = {"errors": [{"title": error.message, "code": error.code, "detail": error.message}]}
    return Response.json(body, status=_REMOVEBG_STATUS.get(error.status, error.status),
                         headers=error.headers)


def wants_json(accept: str | None) -> bool:
    """remove.bg answers JSON when Accept names application/json before any image type."""
    for media_range in (accept or "").split(","):
        mimetype, params = parse_options_header(media_range)
        if params.get("q", "1").strip() in ("0", "0.0", "0.00", "0.000"):
            continue
        if mimetype == JSON:
            return True
        if mimetype.startswith("image/") or mimetype == "*/*":
            return False
    return False


def read_request(request: Request, settings: Settings) -> RemoveBgUpload:
    """The image, an optional background and the text parameters, from any body
    remove.bg accepts; the image from image_file or image_file_b64."""
    mimetype, _ = parse_options_header(request.header("Content-Type"))
    if request.query:
        raise BadRequest("remove.bg's parameters go in the body, not the query string.",
                         code="unknown_parameter")
    limit = settings.max_upload_bytes
    setting = upload_limit_text(settings)
    files: dict[str, bytes] = {}
    if mimetype == FORM:
        reader = request.body_reader(
            2 * limit + FORM_OVERHEAD_BYTES,
            limit_text=f"{setting} per file, plus {size_text(FORM_OVERHEAD_BYTES)} of fields")
        form = read_form(reader.read, boundary_from_content_type(request.header("Content-Type")),
                         max_file_bytes=limit, file_limit_text=setting, max_parts=MAX_PARTS)
        values = single_values(form.fields)
        for name, uploads in form.files.items():
            if name == "image_file_b64":  # base64 text, sent as a file part
                values[name] = _text(uploads[0].data)
                continue
            if name not in FILE_PARAMETERS:
                raise BadRequest(f"Unknown file field {name[:32]!r}; the files are "
                                 f"{' and '.join(FILE_PARAMETERS)}.", code="unknown_parameter")
            files[name] = uploads[0].data
    elif mimetype in (URLENCODED, JSON):
        # NOTE: base64 is 4/3 of the image; twice the limit leaves room for escapes.
        reader = request.body_reader(2 * limit + FORM_OVERHEAD_BYTES, limit_text=setting)
        body = b"".join(iter(lambda: reader.read(FORM_OVERHEAD_BYTES), b""))
        values = _json_values(body) if mimetype == JSON else _urlencoded_values(body)
    else:
        raise UnsupportedMediaType(f"Send {FORM}, {URLENCODED} or {JSON}.",
                                   code="unsupported_content_type")
    for name in FILE_PARAMETERS:
        if name in values:
            raise BadRequest(f"{name} arrived as text; send it as a file part of a "
                             "multipart/form-data form, or the image as image_file_b64.",
                             code=f"{name}_not_a_file")
    encoded = values.pop("image_file_b64", None)
    if encoded is not None:
        if "image_file" in files:
            raise BadRequest("Send one image: image_file or image_file_b64.",
                             code="conflicting_image")
        files["image_file"] = _base64_image(encoded, limit, setting)
    if "image_file" not in files and "image_url" not in values:
        raise BadRequest("No image: send image_file (a file) or image_file_b64 (base64).",
                         code="missing_image")
    return RemoveBgUpload(files.get("image_file", b""), files.get("bg_image_file"), values)


def _text(body: bytes) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("The body is not valid UTF-8.", code="malformed_body") from None


def _urlencoded_values(body: bytes) -> dict[str, str]:
    values: dict[str, list[str]] = {}
    try:
        pairs = parse_qsl(_text(body), keep_blank_values=True, errors="strict")
    except (UnicodeDecodeError, ValueError):
        raise BadRequest("The form body is malformed.", code="malformed_body") from None
    for name, value in pairs:
        values.setdefault(name, []).append(value)
    return single_values(values)


def _json_values(body: bytes) -> dict[str, str]:
    try:
        data = json.loads(_text(body))
    except ValueError as error:
        raise BadRequest(f"The JSON body is malformed: {str(error)[:80]}.",
                         code="malformed_body") from None
    if not isinstance(data, dict):
        raise BadRequest("The JSON body must be an object.", code="malformed_body")
    values = {}
    for name, value in data.items():
        if value is None:
            continue  # null: not given
        expected = JSON_TYPES.get(name, str)
        if expected is int and isinstance(value, float) and value.is_integer():
            value = int(value)  # JSON Schema: 5.0 is an integer
        # NOTE: bool is an int to Python; JSON tells them apart, and so do we.
        if type(value) is not expected:
            raise BadRequest(f"{name[:32]!r} must be a JSON {_JSON_NAMES[expected]}.",
                             code="invalid_parameter_type")
        values[name] = ("true" if value else "false") if expected is bool else str(value)
    return values


_JSON_NAMES = {bool: "boolean", int: "integer", str: "string"}


def _base64_image(encoded: str, limit: int, setting: str) -> bytes:
    """image_file_b64's bytes; a data: URL's prefix is allowed, line breaks too."""
    if encoded.startswith("data:") and "," in encoded:
        encoded = encoded.split(",", 1)[1]
    compact = "".join(encoded.split())
    if len(compact) * 3 // 4 > limit + 2:
        raise PayloadTooLarge(f"image_file_b64 decodes to more than {size_text(limit)} "
                              f"({setting}).", code="file_too_large")
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest("image_file_b64 is not valid base64.",
                         code="invalid_image_file_b64") from None
