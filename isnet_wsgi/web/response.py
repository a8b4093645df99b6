"""A response: status, headers and a body held in memory, or streamed."""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Iterable, Iterator

JSON_TYPE = "application/json"


class StreamedBody:
    """A body sent as its parts are made (a full-resolution PNG, a band at a
    time): never all its bytes at once. ``len()`` is the bytes sent so far,
    the whole body's once the server has sent it."""

    def __init__(self, parts: Iterable[bytes]):
        self._parts = parts
        self.bytes_sent = 0

    def __iter__(self) -> Iterator[bytes]:
        for part in self._parts:
            self.bytes_sent += len(part)
            yield part

    def __len__(self) -> int:
        return self.bytes_sent

    def close(self) -> None:
        """Let the parts' maker go (and what it holds), sent or not."""
        close = getattr(self._parts, "close", None)
        if close is not None:
            close()


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
        if isinstance(self.body, StreamedBody):
            return list(self.headers)  # no length known: the server sends it chunked
        return self.headers + [("Content-Length", str(len(self.body)))]
