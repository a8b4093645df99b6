"""Time limits on one client's connection: the head, the body, the answer.

The service has one sync worker, so a client that sends (or reads) slowly
would hold everyone else up. Every read and write of a client has a
deadline, as nginx's ``client_header_timeout``, ``client_body_timeout`` and
``send_timeout`` give, but by rate rather than by idle time: a client that
sends one byte a second is never idle, yet it would keep the worker for days.

- The request head (request line and headers) must arrive within
  ``head_timeout_s`` of the connection being accepted.
- The body, once ``grace_s`` has passed, must arrive at ``min_rate_bytes_s``
  on average, and whole within ``body_timeout_s``.
- A response is sent at the same minimum rate, after the same grace.
- After the answer, what the client still sends is read and thrown away
  ("lingering close"), for at most ``linger_s`` and ``linger_max_bytes``, and
  only while it keeps coming at the minimum rate: a client that sends its
  whole body before it reads (urllib, many SDKs) then sees an early 413
  instead of a reset connection.

``read_deadline`` is the one rule. The ``ConnectionPool`` (connections.py)
applies it to the connections the worker holds but does not serve yet, and
lingers; ``PacedSocket`` to the one the worker serves: a missed read
deadline raises ``RequestTimeout`` (the API's 408), a missed write deadline
``ClientTooSlowToRead``, an ``OSError`` that the server treats as a client
that went away.
"""

from __future__ import annotations

import errno
import socket
import time
from dataclasses import dataclass
from typing import Callable

from ..web.errors import RequestTimeout

KIB = 1024
# Seconds a lingering close waits for the first bytes: a client still sending
# its body has them in flight already.
_LINGER_GRACE_S = 0.5


@dataclass(frozen=True)
class ClientLimits:
    head_timeout_s: float = 5.0
    grace_s: float = 2.0
    min_rate_bytes_s: float = 32 * KIB
    body_timeout_s: float = 20.0
    linger_s: float = 5.0
    linger_max_bytes: int = 16 * KIB * KIB

    @classmethod
    def from_settings(cls, settings) -> "ClientLimits":
        return cls(head_timeout_s=settings.request_head_timeout_s,
                   grace_s=settings.upload_grace_s,
                   min_rate_bytes_s=settings.min_upload_rate_kb_s * KIB,
                   body_timeout_s=settings.upload_timeout_s,
                   # An upload up to twice the limit still gets its 413 read.
                   linger_max_bytes=2 * settings.max_upload_bytes)


def read_deadline(phase: str, started: float, received: int,
                  limits: ClientLimits) -> float | None:
    """When the next byte of a ``phase`` that began at ``started``, with
    ``received`` bytes of it read so far, must have arrived; None: never."""
    if phase == "head":
        return started + limits.head_timeout_s
    if phase == "body":
        # After the grace, every byte buys 1/min_rate s: the average rate
        # since the body began never falls below the minimum.
        by_rate = max(limits.grace_s, received / limits.min_rate_bytes_s)
        return started + min(by_rate, limits.body_timeout_s)
    if phase == "linger":
        by_rate = max(_LINGER_GRACE_S, received / limits.min_rate_bytes_s)
        return started + min(by_rate, limits.linger_s)
    return None


def timeout_error(phase: str, limits: ClientLimits) -> RequestTimeout:
    """The 408 for a client that missed the deadline of ``phase``."""
    if phase == "head":
        return RequestTimeout(
            f"The request line and headers did not arrive within "
            f"{limits.head_timeout_s:g} s.", code="header_timeout")
    if phase == "body":
        return RequestTimeout(
            f"The request body arrived slower than {limits.min_rate_bytes_s / KIB:g} KiB/s "
            f"or took longer than {limits.body_timeout_s:g} s.", code="body_timeout")
    return RequestTimeout("The client kept sending after the answer.", code="linger_timeout")


class ClientTooSlowToRead(OSError):
    """The client did not read the response at the minimum rate."""

    def __init__(self, message: str):
        # EPIPE: to gunicorn this is a client that went away, not a server error.
        super().__init__(errno.EPIPE, message)


class PacedSocket:
    """A client socket whose reads and writes each have a deadline.

    Phases follow the request: ``head`` from ``connected_at`` (accept, by
    default), ``body`` once the head is parsed (``start_body``). ``shutdown``
    ends the limits: gunicorn's own close drains the socket under its own
    short timeout after that, unless ``on_close`` takes the socket at close
    (the pool lingers on it).

    ``buffered`` is what the pool read from the socket before: reads return
    it first.
    """

    def __init__(self, sock: socket.socket, limits: ClientLimits, *,
                 clock: Callable[[], float] = time.monotonic,
                 buffered: bytes | bytearray = b"", connected_at: float | None = None,
                 on_close: Callable[[socket.socket], None] | None = None):
        self._sock = sock
        self._limits = limits
        self._clock = clock
        self.phase = "head"
        self._started = clock() if connected_at is None else connected_at
        self._received = 0
        self.timed_out = False
        self._buffered = memoryview(buffered) if buffered else None
        self._on_close = on_close
        self._closed = False

    def __getattr__(self, name):
        # Everything not limited here (getpeername, fileno, send, ...) is the socket's.
        return getattr(self._sock, name)

    def start_body(self) -> None:
        self.phase = "body"
        self._started = self._clock()
        self._received = 0

    def recv(self, size: int, *flags) -> bytes:
        if self.timed_out:
            return b""  # not even gunicorn's own drain on close waits for it
        if self._buffered is not None and self.phase != "closed":
            return self._take_buffered(size)
        deadline = read_deadline(self.phase, self._started, self._received, self._limits)
        if deadline is None:
            if self._on_close is not None:
                return b""  # the pool lingers after close: no drain here
            return self._sock.recv(size, *flags)
        left = deadline - self._clock()
        if left <= 0:
            raise self._too_slow()
        self._sock.settimeout(left)
        try:
            data = self._sock.recv(size, *flags)
        except socket.timeout:
            raise self._too_slow() from None
        self._received += len(data)
        return data

    def _take_buffered(self, size: int) -> bytes:
        data = bytes(self._buffered[:size])
        rest = self._buffered[size:]
        # Let go once read through: a whole body the pool held is not kept
        # beside the app's copy of it while the app works.
        self._buffered = rest if len(rest) else None
        self._received += len(data)
        return data

    def sendall(self, data, *flags) -> None:
        limits = self._limits
        self._sock.settimeout(limits.grace_s + len(data) / limits.min_rate_bytes_s)
        try:
            self._sock.sendall(data, *flags)
        except socket.timeout:
            raise ClientTooSlowToRead(
                f"the client read {len(data)} bytes slower than "
                f"{limits.min_rate_bytes_s / KIB:g} KiB/s") from None

    def shutdown(self, how: int) -> None:
        self.phase = "closed"
        if not self._closed:
            self._sock.shutdown(how)

    def close(self) -> None:
        if self._closed:
            return  # gunicorn closes twice after an error mid-answer
        self._closed = True
        self.phase = "closed"
        self._buffered = None
        if self._on_close is None:
            self._sock.close()
        else:
            self._on_close(self._sock)

    def _too_slow(self) -> RequestTimeout:
        self.timed_out = True
        return timeout_error(self.phase, self._limits)
