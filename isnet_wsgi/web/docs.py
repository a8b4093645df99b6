"""The API's own documentation: the OpenAPI 3.1 document and the HTML page at /."""

from __future__ import annotations

import dataclasses
import html
import json
from pathlib import Path

from .. import __version__
from ..config import Settings, shown_value
from ..options import Option, color_spec, remove_spec

_ERROR_SCHEMA = {"$ref": "#/components/schemas/Error"}


def _error(description: str) -> dict:
    return {"description": description,
            "content": {"application/json": {"schema": _ERROR_SCHEMA}}}


def _upload_body(settings: Settings, options: tuple[Option, ...], *,
                 background: bool = False) -> dict:
    """A multipart form (file + options as fields), or the raw image as the body."""
    properties = {"file": {
        "type": "string", "format": "binary",
        "description": f"The image: {', '.join(settings.allowed_extensions)}; "
                       f"at most {settings.max_upload_mb:g} MB."}}
    if background:
        properties["bg_file"] = {
            "type": "string", "format": "binary",
            "description": "Optional background image, scaled and centre-cropped to cover the "
                           "photo (after the photo is scaled to max_dimension)."}
    properties.update({option.name: option.schema() for option in options})
    raw = {"schema": {"type": "string", "format": "binary"},
           "description": "The raw image bytes (e.g. curl --data-binary); options go in the "
                          "query string; the download is named after 'image'."}
    return {"required": True, "content": {
        "multipart/form-data": {"schema": {
            "type": "object", "required": ["file"], "properties": properties}},
        "image/*": raw, "application/octet-stream": raw}}


def _query(options: tuple[Option, ...]) -> list[dict]:
    return [{"name": option.name, "in": "query", "required": False,
             "description": option.description + " (A form field of the same name wins.)",
             "schema": option.schema()} for option in options]


def remove_options(settings: Settings) -> tuple[Option, ...]:
    return remove_spec(ceiling_px=settings.max_dimension_px,
                       refine_default=settings.refine_default)


def color_options(settings: Settings) -> tuple[Option, ...]:
    return color_spec(ceiling_px=settings.max_dimension_px,
                      refine_default=settings.refine_default)


_UPLOAD_ERRORS = {
    "400": _error("Malformed form, missing file, damaged image, or a bad option (the code "
                  "names it: missing_boundary, invalid_boundary, malformed_multipart, "
                  "missing_file, file_not_a_file, bg_file_not_a_file, invalid_format, "
                  "invalid_mask, invalid_crop, invalid_margin, invalid_max_dimension, "
                  "invalid_color, invalid_blur, conflicting_background)."),
    "401": _error("API_KEY is set and the request has no valid bearer token."),
    "408": _error("The request arrived too slowly (header_timeout, body_timeout: see "
                  "REQUEST_HEAD_TIMEOUT_S, MIN_UPLOAD_RATE_KB_S, UPLOAD_TIMEOUT_S)."),
    "413": _error("The upload, the image's pixel count or its decode memory is over a limit "
                  "(the code names which: body_too_large, file_too_large, field_too_large, "
                  "part_headers_too_large, too_many_parts, image_too_large, "
                  "decode_budget_exceeded)."),
    "415": _error("Neither multipart/form-data nor an image body, or not an accepted "
                  "image type."),
    "503": _error("Model not loaded, or processing passed the time limit."),
}


def _image_answer(description: str, media_types: tuple[str, ...]) -> dict:
    binary = {"schema": {"type": "string", "format": "binary"}}
    return {"description": description, "content": {media: binary for media in media_types},
            "headers": {"X-Cache": {
                "description": "hit or miss: whether the result came from the result cache "
                               "(absent when CACHE_MB=0)",
                "schema": {"type": "string", "enum": ["hit", "miss"]}}}}


def openapi_document(settings: Settings) -> dict:
    """Every route, its parameters and its answers, as OpenAPI 3.1."""
    json_object = {"application/json": {"schema": {"type": "object"}}}
    security = [{"bearer": []}] if settings.api_key else []
    return {
        "openapi": "3.1.0",
        "info": {"title": "isnet-wsgi", "version": __version__,
                 "description": "Background removal with ISNet, in a small memory footprint."},
        "paths": {
            "/": {"get": {"summary": "This API's documentation as HTML, and a page to try it "
                                     "(drop an image, see the result and its mask)",
                          "responses": {"200": {"description": "HTML page"}}}},
            "/openapi.json": {"get": {"summary": "This document",
                                      "responses": {"200": {"description": "OpenAPI 3.1",
                                                            "content": json_object}}}},
            "/metrics": {"get": {
                "summary": "Prometheus metrics of the worker (text format 0.0.4)",
                "responses": {"200": {"description": "Requests, latency, inference time, "
                                                     "memory, model load time, recycles",
                                      "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
            "/api/bg/health": {"get": {
                "summary": "Liveness and readiness for health checks",
                "responses": {"200": {"description": "Healthy", "content": json_object},
                              "503": {"description": "Unhealthy, with a reason",
                                      "content": json_object}}}},
            "/api/bg/status": {"get": {
                "summary": "Model, memory, limits and settings",
                "responses": {"200": {"description": "Status", "content": {
                    "application/json": {"schema": {"type": "object", "properties": {
                        "settings": {"$ref": "#/components/schemas/Settings"}}}}}}}}},
            "/api/bg/remove": {"post": {
                "summary": "Cut the subject out onto transparency (PNG or WebP with alpha)",
                "security": security, "parameters": _query(remove_options(settings)),
                "requestBody": _upload_body(settings, remove_options(settings)),
                "responses": {"200": _image_answer(
                    "The cut-out as nobg_<name>.<ext>, or the mask as mask_<name>.<ext>",
                    ("image/png", "image/webp")), **_UPLOAD_ERRORS}}},
            "/api/bg/change_color": {"post": {
                "summary": "Put the subject on a colour, a blurred copy of its background, "
                           "or an uploaded background",
                "security": security, "parameters": _query(color_options(settings)),
                "requestBody": _upload_body(settings, color_options(settings), background=True),
                "responses": {"200": _image_answer(
                    "The composite as color_<name>.<ext>",
                    ("image/jpeg", "image/png", "image/webp")), **_UPLOAD_ERRORS}}},
            "/api/bg/clear_cache": {"post": {
                "summary": "Empty the result cache, collect garbage, return memory to the OS",
                "security": security,
                "responses": {"200": {"description": "What was cleared (cached results: "
                                                     "entries and bytes), RSS before and after",
                                      "content": json_object},
                              "401": _UPLOAD_ERRORS["401"]}}},
        },
        "components": {
            "schemas": {"Error": {"type": "object", "required": ["error", "message"],
                                  "properties": {"error": {"type": "string"},
                                                 "message": {"type": "string"}}},
                        "Settings": settings_schema()},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


_JSON_TYPES = {int: "integer", float: "number", bool: "boolean", str: "string",
               Path: "string", tuple[str, ...]: "array", str | None: ["string", "null"]}


def settings_schema() -> dict:
    """The settings as /api/bg/status shows them, from their declarations."""
    properties = {}
    for field, kind, declaration in Settings.declarations():
        schema = {"type": _JSON_TYPES[kind],
                  "description": f"{declaration.env}: {declaration.meaning}"}
        if kind == tuple[str, ...]:
            schema["items"] = {"type": "string"}
        if declaration.low is not None:
            schema["minimum"], schema["maximum"] = declaration.low, declaration.high
        if field.default is not dataclasses.MISSING and not declaration.secret:
            schema["default"] = (declaration.default_text if declaration.default_text
                                 else shown_value(declaration, field.default))
        properties[field.name] = schema
    return {"type": "object", "properties": properties}


# Read once, at import (in gunicorn's master under preload_app).
_PAGE = (Path(__file__).parent / "static" / "index.html").read_text(encoding="utf-8")


def index_html(settings: Settings, base_url: str) -> str:
    """A page a person can read and use: drop an image, see the result and its
    mask; below, every endpoint with its options and a curl example."""
    limits = (f"Uploads up to {settings.max_upload_mb:g} MB; images are scaled so the long "
              f"side is at most {settings.max_dimension_px} px; accepted types: "
              f"{', '.join(settings.allowed_extensions)}; {settings.request_timeout_s} s per "
              "request. Errors are JSON: {\"error\": code, \"message\": text}. "
              "Nothing you upload is written to disk.")
    key_field = ('<label>API key <input id="key" type="password" autocomplete="off"></label>'
                 if settings.api_key else "")
    return (_PAGE.replace("<!--VERSION-->", html.escape(__version__))
            .replace("<!--LIMITS-->", html.escape(limits))
            .replace("<!--KEY-->", key_field)
            .replace("<!--DOCS-->", _endpoint_docs(settings, base_url)))


def _endpoint_docs(settings: Settings, base_url: str) -> str:
    base = html.escape(base_url.rstrip("/"))
    auth = ' -H "Authorization: Bearer $API_KEY"' if settings.api_key else ""
    post = f"curl{auth}"
    sections = [
        ("GET /api/bg/health", "Health check (200 healthy, 503 unhealthy).",
         [f"curl {base}/api/bg/health"], []),
        ("GET /api/bg/status", "Model, memory, limits, cache and settings.",
         [f"curl {base}/api/bg/status"], []),
        ("POST /api/bg/remove", "The subject on transparency (PNG or WebP), or its mask. "
         "Send a multipart form (options as fields) or the raw image (options in the query).",
         [f"{post} -F file=@photo.jpg -o photo.png {base}/api/bg/remove",
          f"{post} -F file=@photo.jpg -F format=webp -F crop=true -F margin=16 "
          f"-o photo.webp {base}/api/bg/remove",
          f"{post} --data-binary @photo.jpg -H 'Content-Type: image/jpeg' "
          f"-o mask.png '{base}/api/bg/remove?mask=true'"],
         remove_options(settings)),
        ("POST /api/bg/change_color", "The subject on a colour, a blur of its own "
         "background, or an uploaded background (bg_file, fitted by cover).",
         [f"{post} -F file=@photo.jpg -F color=#00FF00 -o green.jpg {base}/api/bg/change_color",
          f"{post} -F file=@photo.jpg -F blur=12 -o blurred.jpg {base}/api/bg/change_color",
          f"{post} -F file=@photo.jpg -F bg_file=@beach.jpg -F format=png "
          f"-o beach.png {base}/api/bg/change_color"],
         color_options(settings)),
        ("POST /api/bg/clear_cache", "Empty the result cache, collect garbage, return "
         "memory to the OS.", [f"{post} -X POST {base}/api/bg/clear_cache"], []),
        ("GET /openapi.json", "The OpenAPI 3.1 document.", [f"curl {base}/openapi.json"], []),
        ("GET /metrics", "Prometheus metrics.", [f"curl {base}/metrics"], []),
    ]
    return "\n".join(
        f"<h3><code>{html.escape(title)}</code></h3><p>{html.escape(text)}</p>"
        + _options_table(options)
        + "".join(f"<pre>{html.escape(command, quote=False)}</pre>" for command in commands)
        for title, text, commands, options in sections)


def _options_table(options: tuple[Option, ...]) -> str:
    if not options:
        return ""
    rows = "".join(
        f"<tr><td><code>{html.escape(option.name)}</code></td>"
        f"<td>{html.escape(_api_text(option.default))}</td>"
        f"<td>{html.escape(option.description)}</td></tr>" for option in options)
    return f"<table><tr><th>option</th><th>default</th><th>meaning</th></tr>{rows}</table>"


def _api_text(value) -> str:
    """A value as a client writes it: false, not Python's False; nothing for none."""
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value)
