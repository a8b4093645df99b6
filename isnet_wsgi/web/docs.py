"""The API's own documentation as the HTML page at / (the OpenAPI document: openapi.py)."""

from __future__ import annotations

import html
import json
from pathlib import Path

from .. import __version__
from ..config import Settings
from ..options import Option
from .openapi import color_options, remove_options

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
    removebg_key = ' -H "X-Api-Key: $API_KEY"' if settings.api_key else ""
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
        ("POST /v1.0/removebg", "remove.bg's API: its parameters (size, format incl. zip, "
         "channels, bg_color, bg_image_file, crop, crop_margin), answers and error shape, so "
         "its clients work once pointed here. image_url is refused: no outbound requests.",
         [f"curl{removebg_key} -F image_file=@photo.jpg -F size=auto -o no-bg.png "
          f"{base}/v1.0/removebg"], []),
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
