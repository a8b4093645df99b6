"""A complete response: status, headers and a body held in memory."""

from __future__ import annotations

import json
from http import HTTPStatus

JSON_TYPE = "application/json"


class Response:
    """What a handler returns; the app hands it to the WSGI server as it is."""

    def __init__(self, body: bytes = b"", *, status: int = 200,
                 content_type: str = "text/plain; charset=utf-8",
                 headers: list[tuple[str, str]] | None = None):
        self.status = status
        self.body = body
        self.headers = [("Content-Type", content_type)] + list(headers or [])

    @classmethod
    def json(cls, data, *, status: int = 200, headers=None) -> "Response":
        body = json.dumps(data, separators=(",", ":"), allow_nan=False).encode()
        return cls(body, status=status, content_type=JSON_TYPE, headers=headers)

    @property
    def status_line(self) -> str:
        return f"{self.status} {HTTPStatus(self.status).phrase}"

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        return next((v for k, v in self.headers if k.lower() == lowered), None)

    def wsgi_headers(self) -> list[tuple[str, str]]:
        return self.headers + [("Content-Length", str(len(self.body)))]
