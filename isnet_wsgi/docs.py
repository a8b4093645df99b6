"""The API's own documentation: the OpenAPI 3.1 document and the HTML page at /."""

from __future__ import annotations

import html

from . import __version__
from .config import Settings

_ERROR_SCHEMA = {"$ref": "#/components/schemas/Error"}


def _error(description: str) -> dict:
    return {"description": description,
            "content": {"application/json": {"schema": _ERROR_SCHEMA}}}


def _upload_body(settings: Settings, extra_fields: dict | None = None) -> dict:
    properties = {"file": {
        "type": "string", "format": "binary",
        "description": f"The image: {', '.join(settings.allowed_extensions)}; "
                       f"at most {settings.max_upload_mb:g} MB."}}
    properties.update(extra_fields or {})
    return {"required": True, "content": {"multipart/form-data": {"schema": {
        "type": "object", "required": ["file"], "properties": properties}}}}


_UPLOAD_ERRORS = {
    "400": _error("Malformed form, missing file, damaged image or bad parameter."),
    "401": _error("API_KEY is set and the request has no valid bearer token."),
    "413": _error("The upload or the image's pixel count is over the limit."),
    "415": _error("Not multipart/form-data, or not an accepted image type."),
    "503": _error("Model not loaded, or processing passed the time limit."),
}


def openapi_document(settings: Settings) -> dict:
    """Every route, its parameters and its answers, as OpenAPI 3.1."""
    binary = {"schema": {"type": "string", "format": "binary"}}
    json_object = {"application/json": {"schema": {"type": "object"}}}
    color = {"type": "string", "default": "#FFFFFF", "examples": ["#00FF00", "#0F0", "0,255,0"],
             "description": "Background colour: #RRGGBB, #RGB or R,G,B (0-255)."}
    security = [{"bearer": []}] if settings.api_key else []
    return {
        "openapi": "3.1.0",
        "info": {"title": "isnet-wsgi", "version": __version__,
                 "description": "Background removal with ISNet, in a small memory footprint."},
        "paths": {
            "/": {"get": {"summary": "This API's documentation as HTML",
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
                "responses": {"200": {"description": "Status", "content": json_object}}}},
            "/api/bg/remove": {"post": {
                "summary": "Cut the subject out onto transparency (PNG with alpha)",
                "security": security, "requestBody": _upload_body(settings),
                "responses": {"200": {"description": "The cut-out, as an attachment "
                                                     "named nobg_<name>.png",
                                      "content": {"image/png": binary}}, **_UPLOAD_ERRORS}}},
            "/api/bg/change_color": {"post": {
                "summary": "Put the subject on a solid colour (JPEG)",
                "security": security,
                "requestBody": _upload_body(settings, {"color": color}),
                "responses": {"200": {"description": "The composite",
                                      "content": {"image/jpeg": binary}}, **_UPLOAD_ERRORS}}},
            "/api/bg/clear_cache": {"post": {
                "summary": "Collect garbage and return free memory to the OS",
                "security": security,
                "responses": {"200": {"description": "What was cleared, RSS before and after",
                                      "content": json_object},
                              "401": _UPLOAD_ERRORS["401"]}}},
        },
        "components": {
            "schemas": {"Error": {"type": "object", "required": ["error", "message"],
                                  "properties": {"error": {"type": "string"},
                                                 "message": {"type": "string"}}}},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def index_html(settings: Settings, base_url: str) -> str:
    """A page a person can read: every endpoint with a curl example."""
    base = html.escape(base_url.rstrip("/"))
    auth = ' -H "Authorization: Bearer $API_KEY"' if settings.api_key else ""
    examples = [
        ("GET /api/bg/health", "Health check (200 healthy, 503 unhealthy).",
         f"curl {base}/api/bg/health"),
        ("GET /api/bg/status", "Model, memory, limits and settings.",
         f"curl {base}/api/bg/status"),
        ("POST /api/bg/remove", "Transparent PNG of the subject.",
         f"curl{auth} -F file=@photo.jpg -o photo.png {base}/api/bg/remove"),
        ("POST /api/bg/change_color", "The subject on a colour, as JPEG.",
         f"curl{auth} -F file=@photo.jpg -F color=#00FF00 -o green.jpg {base}/api/bg/change_color"),
        ("POST /api/bg/clear_cache", "Collect garbage, return memory to the OS.",
         f"curl{auth} -X POST {base}/api/bg/clear_cache"),
        ("GET /openapi.json", "The OpenAPI 3.1 document.", f"curl {base}/openapi.json"),
        ("GET /metrics", "Prometheus metrics.", f"curl {base}/metrics"),
    ]
    rows = "\n".join(
        f"<h2><code>{html.escape(title)}</code></h2><p>{html.escape(text)}</p>"
        f"<pre>{html.escape(command, quote=False)}</pre>"
        for title, text, command in examples)
    limits = (f"Uploads up to {settings.max_upload_mb:g} MB; images are scaled so the long "
              f"side is at most {settings.max_dimension_px} px; accepted types: "
              f"{', '.join(settings.allowed_extensions)}; {settings.request_timeout_s} s per "
              "request. Errors are JSON: {\"error\": code, \"message\": text}. "
              "Nothing you upload is written to disk.")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>isnet-wsgi</title>
<style>body{{font:16px/1.5 system-ui,sans-serif;max-width:46rem;margin:2rem auto;padding:0 1rem}}
pre{{background:#f4f4f4;padding:.6rem;overflow-x:auto}}</style></head>
<body><h1>isnet-wsgi {html.escape(__version__)}</h1>
<p>Background removal with ISNet. {html.escape(limits)}</p>
{rows}
</body></html>
"""
