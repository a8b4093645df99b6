"""What a POST to /api/bg carries: the image, an optional background, the options.

The image comes as a multipart form (file and options as fields) or as the
raw body (options in the query). Options may also come in the query of a
form upload: each place is checked on its own (a bad value is refused
wherever it is), and options that go together (options.REMOVE_GROUPS,
COLOR_GROUPS) are taken together from the form when it names any of them.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Callable, Mapping

from ..config import Settings
from ..file_names import split_file_name
from .errors import BadRequest, UnsupportedMediaType
from .headers import parse_options_header
from .http import Request
from .multipart import Form, FormFile, boundary_from_content_type, read_form, size_text

# Room for the form's other fields and part headers next to the file itself.
FORM_OVERHEAD_BYTES = 64 * 1024
# Read size for a raw (non-multipart) body.
RAW_CHUNK_BYTES = 64 * 1024


@dataclass(frozen=True)
class Upload:
    """The image, the options from the query and from the form, an optional background."""

    file: FormFile
    query: dict[str, str]
    fields: dict[str, str] = field(default_factory=dict)
    background: FormFile | None = None

    def options(self, parse: Callable, groups: tuple[tuple[str, ...], ...], **limits):
        """The options, parsed: the query's and the form's each checked, then merged."""
        in_form = set(self.fields) | ({"bg_file"} if self.background else set())
        takes_file = "background_file" in limits
        if self.query:
            parse(self.query, **(limits | {"background_file": False} if takes_file else limits))
        merged = dict(self.query)
        for name in self.query:
            group = next((group for group in groups if name in group), ())
            if in_form & set(group):
                del merged[name]  # the form names this group: it wins whole
        return parse(merged | self.fields, **limits)


def read_upload(request: Request, settings: Settings, *, background: bool = False) -> Upload:
    """The image (and background) with the options: from a form or a raw body."""
    file_fields = ("file", "bg_file") if background else ("file",)
    query = single_values(request.query)
    _refuse_files_sent_as_text(query, file_fields)
    mimetype, _ = parse_options_header(request.header("Content-Type"))
    if mimetype.startswith("image/") or mimetype == "application/octet-stream":
        # A raw body: the bytes are the image, the options are in the query.
        return Upload(FormFile("file", "image", mimetype, read_raw(request, settings)), query)
    form = _read_form(request, settings, files=len(file_fields))
    fields = single_values(form.fields)
    _refuse_files_sent_as_text(fields, file_fields)
    _refuse_unknown_files(form, file_fields)
    allowed = settings.allowed_extensions
    return Upload(_one_file(form, "file", allowed, required=True), query, fields,
                  _one_file(form, "bg_file", allowed) if background else None)


def single_values(given: Mapping[str, list[str]]) -> dict[str, str]:
    """Each name's one value; a name sent twice is a 400, not a guess at which counts."""
    for name, values in given.items():
        if len(values) > 1:
            raise BadRequest(f"'{name[:32]}' was sent {len(values)} times; send each option "
                             "once.", code="repeated_option")
    return {name: values[0] for name, values in given.items()}


def upload_limit_text(settings: Settings) -> str:
    """The setting an upload's size limit comes from, for its 413: 'MAX_UPLOAD_MB=8'."""
    return f"MAX_UPLOAD_MB={settings.max_upload_mb:g}"


def read_raw(request: Request, settings: Settings) -> bytes:
    # The declared length is refused before reading, the streamed bytes counted.
    reader = request.body_reader(settings.max_upload_bytes, limit_text=upload_limit_text(settings))
    body = io.BytesIO()  # PERF: getvalue() hands over its buffer without a copy
    while chunk := reader.read(RAW_CHUNK_BYTES):
        body.write(chunk)
    return body.getvalue()


def _read_form(request: Request, settings: Settings, *, files: int) -> Form:
    """The whole form; its errors are web/errors.py's table's to answer."""
    boundary = boundary_from_content_type(request.header("Content-Type"))
    limit = settings.max_upload_bytes
    setting = upload_limit_text(settings)
    reader = request.body_reader(
        files * limit + FORM_OVERHEAD_BYTES,
        limit_text=f"{setting} per file, {files} file(s), plus "
                   f"{size_text(FORM_OVERHEAD_BYTES)} for the form's fields")
    return read_form(reader.read, boundary, max_file_bytes=limit, file_limit_text=setting)


def _one_file(form: Form, name: str, allowed_extensions: tuple[str, ...], *,
              required: bool = False) -> FormFile | None:
    files = form.files.get(name, [])
    if not files and required:
        arrived = ", ".join(f"'{other[:32]}'" for other in form.files)
        raise BadRequest(f"No file was uploaded in the field '{name}'"
                         + (f"; the form's files came as {arrived}." if arrived
                            else "; the form had no file at all."), code="missing_file")
    if len(files) > 1:
        raise BadRequest(f"Send one file per field ('{name}').", code="too_many_files")
    if files:
        _check_extension(files[0].filename, allowed_extensions)
    return files[0] if files else None


def _check_extension(filename: str, allowed_extensions: tuple[str, ...]) -> None:
    _, suffix = split_file_name(filename)
    if suffix and suffix not in allowed_extensions:
        raise UnsupportedMediaType(
            f"Files ending in .{suffix[:16]} are not accepted; allowed: "
            f"{', '.join(allowed_extensions)}.", code="unsupported_extension")


def _refuse_files_sent_as_text(values: Mapping[str, str], file_fields: tuple[str, ...]) -> None:
    """A file field that came as text (a form field, the query) is a 400, never ignored."""
    for name in file_fields:
        if name in values:
            raise BadRequest(f"'{name}' arrived as text; send the image as a file part of a "
                             f"multipart/form-data form (curl -F {name}=@photo.jpg).",
                             code=f"{name}_not_a_file")


def _refuse_unknown_files(form: Form, file_fields: tuple[str, ...]) -> None:
    """A file in a field no one reads would be ignored, silently: a 400 instead,
    unless the image itself is missing (then missing_file names what came)."""
    unknown = [name for name in form.files if name not in file_fields]
    if unknown and "file" in form.files:
        raise BadRequest(f"Unknown file field '{unknown[0][:32]}'; the file fields are: "
                         f"{', '.join(file_fields)}.", code="unknown_option")
