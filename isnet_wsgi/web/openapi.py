"""The OpenAPI 3.1 document: the contract schemathesis holds the service to
(tests/system/test_openapi_contract.py).

Every option's schema comes from its declaration (options.py,
removebg_options.py), and so do the rules between options (margin needs
crop; one background), written as JSON Schema where OpenAPI can say them:
within the query (one object parameter, ``style: form, explode: true``, so
the query is one schema) and within the form. Unknown names are refused
(``additionalProperties: false``), as the service refuses them.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from .. import __version__
from ..config import Settings, shown_value
from ..options import Option, color_rules_schema, color_spec, remove_rules_schema, remove_spec
from .removebg_options import PARAMETERS as REMOVEBG_PARAMETERS

_ERROR = {"$ref": "#/components/schemas/Error"}
_REMOVEBG_ERROR = {"$ref": "#/components/schemas/RemoveBgError"}
_BINARY = {"type": "string", "format": "binary"}


def _error(description: str, schema: dict = _ERROR) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def remove_options(settings: Settings) -> tuple[Option, ...]:
    return remove_spec(ceiling_px=settings.max_dimension_px,
                       refine_default=settings.refine_default)


def color_options(settings: Settings) -> tuple[Option, ...]:
    return color_spec(ceiling_px=settings.max_dimension_px,
                      refine_default=settings.refine_default)


def _options_object(options: tuple[Option, ...], rules: dict, extra: dict | None = None) -> dict:
    properties = {**(extra or {}), **{option.name: option.schema() for option in options}}
    return {"type": "object", "properties": properties, "additionalProperties": False, **rules}


def _upload_body(settings: Settings, options: tuple[Option, ...], rules: dict, *,
                 background: bool = False) -> dict:
    """A multipart form (file + options as fields), or the raw image as the body."""
    files = {"file": {**_BINARY, "description": f"The image: "
                      f"{', '.join(settings.allowed_extensions)}; at most "
                      f"{settings.max_upload_mb:g} MB (MAX_UPLOAD_MB)."}}
    if background:
        files["bg_file"] = {**_BINARY, "description": "Optional background image, scaled and "
                            "centre-cropped to cover the photo (after the photo is scaled to "
                            "max_dimension)."}
    form = _options_object(options, rules, files)
    form["required"] = ["file"]
    raw = {"schema": _BINARY,
           "description": "The raw image bytes (e.g. curl --data-binary); options go in the "
                          "query string; the download is named after 'image'."}
    return {"required": True, "content": {"multipart/form-data": {"schema": form},
                                          "image/*": raw, "application/octet-stream": raw}}


def _query(options: tuple[Option, ...], rules: dict) -> list[dict]:
    """The options in the query, as one object so the rules between them hold."""
    return [{"name": "options", "in": "query", "required": False, "style": "form",
             "explode": True, "schema": _options_object(options, rules),
             "description": "Each option as its own query parameter (?format=webp&crop=true), "
                            "for a raw-body upload or beside a form. A form field wins over the "
                            "query; options that go together (crop and margin; color, blur and "
                            "bg_file) are taken together from the form when it names any."}]


_UPLOAD_ERRORS = {
    "400": _error("Malformed form, missing file, damaged image, or a bad or unknown option (the "
                  "code names it: missing_boundary, invalid_boundary, malformed_multipart, "
                  "missing_file, file_not_a_file, bg_file_not_a_file, unknown_option, "
                  "invalid_<option>, conflicting_background)."),
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


def _size_headers() -> dict:
    integer = {"schema": {"type": "integer", "minimum": 0}}
    headers = {"X-Width": {"description": "Width of the answer, px", **integer},
               "X-Height": {"description": "Height of the answer, px", **integer}}
    for side in ("Top", "Left", "Width", "Height"):
        headers[f"X-Foreground-{side}"] = {
            "description": f"The subject's bounding box in the answer: {side.lower()}, px "
                           "(absent when no subject was found)", **integer}
    return headers


def _image_answer(description: str, media_types: tuple[str, ...]) -> dict:
    return {"description": description,
            "content": {media: {"schema": _BINARY} for media in media_types},
            "headers": {**_size_headers(), "X-Cache": {
                "description": "hit or miss: whether the result came from the result cache "
                               "(absent when CACHE_MB=0)",
                "schema": {"type": "string", "enum": ["hit", "miss"]}}}}


def _upload_operation(settings: Settings, summary: str, options: tuple[Option, ...],
                      rules: dict, query_rules: dict, answer: dict, *,
                      background: bool = False) -> dict:
    return {"post": {
        "summary": summary, "security": [{"bearer": []}] if settings.api_key else [],
        "parameters": _query(options, query_rules),
        "requestBody": _upload_body(settings, options, rules, background=background),
        "responses": {"200": answer, **_UPLOAD_ERRORS}}}


def _removebg_operation(settings: Settings) -> dict:
    parameters = {parameter.name: {**parameter.schema, "description": parameter.description}
                  for parameter in REMOVEBG_PARAMETERS}
    b64 = {"type": "string", "format": "byte", "contentEncoding": "base64",
           "description": "The image, base64-encoded (instead of image_file)."}
    # NOTE: in a form the image is image_file (the service also reads
    # image_file_b64 there, as remove.bg does; the schema leaves that to the
    # urlencoded and JSON bodies: schemathesis 4.32 fails to generate an anyOf
    # of image sources over a file). One anyOf with false schemas, no
    # not/if/oneOf (see options.remove_rules_schema): at most one background.
    form = {"type": "object", "additionalProperties": False, "required": ["image_file"],
            "properties": {"image_file": {**_BINARY, "description": "The image."},
                           "bg_image_file": {**_BINARY, "description": "A background image, "
                                             "fitted to cover the answer. Not with bg_color."},
                           **parameters},
            "anyOf": [{"properties": {"bg_image_file": False}},
                      {"properties": {"bg_color": False}}]}
    text = {"type": "object", "additionalProperties": False, "required": ["image_file_b64"],
            "properties": {"image_file_b64": b64, **parameters}}
    # In JSON, null is "not given" (a client's unset option).
    nullable = {name: {**schema, "type": [schema["type"], "null"],
                       **({"enum": [*schema["enum"], None]} if "enum" in schema else {})}
                for name, schema in parameters.items()}
    json_body = {**text, "properties": {"image_file_b64": b64, **nullable}}
    errors = {"400": _error("A bad or unknown parameter, no image, a damaged image, or "
                            "image_url/bg_image_url (never fetched: send the image itself).",
                            _REMOVEBG_ERROR),
              "403": _error("API_KEY is set and X-Api-Key is missing or wrong.", _REMOVEBG_ERROR),
              "408": _error("The request arrived too slowly.", _REMOVEBG_ERROR),
              "413": _error("The upload or the image is over a limit.", _REMOVEBG_ERROR),
              "503": _error("Model not loaded, or processing passed the time limit.",
                            _REMOVEBG_ERROR)}
    result = {"type": "object", "required": ["data"], "properties": {"data": {
        "type": "object", "required": ["result_b64"], "properties": {
            "result_b64": {"type": "string", "contentEncoding": "base64"},
            **{f"foreground_{side}": {"type": "integer"}
               for side in ("top", "left", "width", "height")}}}}}
    media = ("image/png", "image/jpeg", "application/zip")
    return {"post": {
        "summary": "remove.bg's API: the same parameters, answers and error shape, so its "
                   "clients work unchanged (docs/removebg.md says what is ignored)",
        "security": [{"removebg_key": []}] if settings.api_key else [],
        "requestBody": {"required": True, "content": {
            "multipart/form-data": {"schema": form},
            "application/x-www-form-urlencoded": {"schema": text},
            "application/json": {"schema": json_body}}},
        "responses": {"200": {
            "description": "The answer; JSON with the image base64-encoded when Accept names "
                           "application/json",
            "headers": _size_headers(),
            "content": {**{media_type: {"schema": _BINARY} for media_type in media},
                        "application/json": {"schema": result}}}, **errors}}}


def _simple_get(summary: str, description: str, content: dict | None = None) -> dict:
    answer = {"description": description, **({"content": content} if content else {})}
    return {"get": {"summary": summary, "responses": {"200": answer}}}


def openapi_document(settings: Settings) -> dict:
    """Every route, its parameters and its answers, as OpenAPI 3.1."""
    json_object = {"application/json": {"schema": {"type": "object"}}}
    remove, color = remove_options(settings), color_options(settings)
    return {
        "openapi": "3.1.0",
        "info": {"title": "isnet-wsgi", "version": __version__,
                 "description": "Background removal with ISNet, in a small memory footprint."},
        "paths": {
            "/": _simple_get("This API's documentation as HTML, and a page to try it (drop "
                             "an image, see the result and its mask)", "HTML page",
                             {"text/html": {"schema": {"type": "string"}}}),
            "/openapi.json": _simple_get("This document", "OpenAPI 3.1", json_object),
            "/metrics": _simple_get("Prometheus metrics of the worker (text format 0.0.4)",
                                    "Requests, latency, inference time, memory, model load "
                                    "time, recycles", {"text/plain": {"schema": {"type": "string"}}}),
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
            "/api/bg/remove": _upload_operation(
                settings, "Cut the subject out onto transparency (PNG or WebP), or its mask",
                remove, remove_rules_schema(), remove_rules_schema(), _image_answer(
                    "The cut-out as nobg_<name>.<ext>, or the mask as mask_<name>.<ext>",
                    ("image/png", "image/webp"))),
            "/api/bg/change_color": _upload_operation(
                settings, "Put the subject on a colour, a blurred copy of its background, or "
                "an uploaded background", color, color_rules_schema(),
                color_rules_schema(("color", "blur")), _image_answer(
                    "The composite as color_<name>.<ext>",
                    ("image/jpeg", "image/png", "image/webp")), background=True),
            "/api/bg/clear_cache": {"post": {
                "summary": "Empty the result cache, collect garbage, return memory to the OS",
                "security": [{"bearer": []}] if settings.api_key else [],
                "responses": {"200": {"description": "What was cleared (cached results: "
                                                     "entries and bytes), RSS before and after",
                                      "content": json_object},
                              "401": _UPLOAD_ERRORS["401"]}}},
            "/v1.0/removebg": _removebg_operation(settings),
        },
        "components": {
            "schemas": {"Error": {"type": "object", "required": ["error", "message"],
                                  "properties": {"error": {"type": "string"},
                                                 "message": {"type": "string"}}},
                        "RemoveBgError": {"type": "object", "required": ["errors"], "properties": {
                            "errors": {"type": "array", "minItems": 1, "items": {
                                "type": "object", "required": ["title", "code"],
                                "properties": {"title": {"type": "string"},
                                               "code": {"type": "string"},
                                               "detail": {"type": "string"}}}}}},
                        "Settings": settings_schema()},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"},
                                "removebg_key": {"type": "apiKey", "in": "header",
                                                 "name": "X-Api-Key"}},
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
