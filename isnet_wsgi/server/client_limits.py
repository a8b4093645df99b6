"""Time limits on one client's connection: the head, the body, the answer.

The service has one sync worker, so a client that sends (or reads) slowly
holds everyone else up. ``PacedSocket`` wraps the accepted socket and gives
every read and write a deadline, as nginx's ``client_header_timeout``,
``client_body_timeout`` and ``send_timeout`` do, but by rate rather than by
idle time: a client that sends one byte a second is never idle, yet it would
keep the worker for days.

- The request head (request line and headers) must arrive within
  ``head_timeout_s`` of the connection being accepted.
- The body, once ``grace_s`` has passed, must arrive at ``min_rate_bytes_s``
  on average, and whole within ``body_timeout_s``.
- A response is sent at the same minimum rate, after the same grace.
- After the answer, what the client still sends is read and thrown away
  ("lingering close"), for at most ``linger_s`` and ``linger_max_bytes``, and
  only while it keeps coming at the minimum rate: a client that sends its
  whole body before it reads (urllib, many SDKs) then sees an early 413
  instead of a reset connection. A client that timed out is not lingered on.

A missed read deadline raises ``RequestTimeout`` (the API's 408); a missed
write deadline raises ``ClientTooSlowToRead``, an ``OSError`` that the server
treats as a client that went away.
"""

from __future__ import annotations

import errno
import socket
import time
from dataclasses import dataclass
from typing import Callable

from ..web.http import RequestTimeout

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


class ClientTooSlowToRead(OSError):
    """The client did not read the response at the minimum rate."""

    def __init__(self, message: str):
        # EPIPE: to gunicorn this is a client that went away, not a server error.
        super().__init__(errno.EPIPE, message)


class PacedSocket:
    """A client socket whose reads and writes each have a deadline.

    Phases follow the request: ``head`` from accept, ``body`` once the head
    is parsed (``start_body``), ``linger`` once the answer is sent
    (``start_linger``). ``shutdown`` ends the limits: gunicorn's own close
    drains the socket under its own short timeout after that.
    """

    def __init__(self, sock: socket.socket, limits: ClientLimits, *,
                 clock: Callable[[], float] = time.monotonic):
        self._sock = sock
        self._limits = limits
        self._clock = clock
        self.phase = "head"
        self._started = clock()
        self._received = 0
        self.timed_out = False

    def __getattr__(self, name):
        # Everything not limited here (getpeername, fileno, send, ...) is the socket's.
        return getattr(self._sock, name)

    def start_body(self) -> None:
        self._enter("body")

    def start_linger(self) -> None:
        self._enter("linger")

    def _enter(self, phase: str) -> None:
        self.phase = phase
        self._started = self._clock()
        self._received = 0

    def _read_deadline(self) -> float | None:
        limits = self._limits
        if self.phase == "head":
            return self._started + limits.head_timeout_s
        if self.phase == "body":
            # After the grace, every byte buys 1/min_rate s: the average
            # rate since the body began never falls below the minimum.
            by_rate = max(limits.grace_s, self._received / limits.min_rate_bytes_s)
            return self._started + min(by_rate, limits.body_timeout_s)
        if self.phase == "linger":
            by_rate = max(_LINGER_GRACE_S, self._received / limits.min_rate_bytes_s)
            return self._started + min(by_rate, limits.linger_s)
        return None

    def recv(self, size: int, *flags) -> bytes:
        if self.timed_out:
            return b""  # not even gunicorn's own drain on close waits for it
        deadline = self._read_deadline()
        if deadline is None:
            return self._sock.recv(size, *flags)
        if self.phase == "linger" and self._received >= self._limits.linger_max_bytes:
            return b""  # enough thrown away: behave as if the client had finished
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
        self._sock.shutdown(how)

    def _too_slow(self) -> RequestTimeout:
        self.timed_out = True
        limits = self._limits
        if self.phase == "head":
            return RequestTimeout(
                f"The request line and headers did not arrive within "
                f"{limits.head_timeout_s:g} s.", code="header_timeout")
        if self.phase == "body":
            return RequestTimeout(
                f"The request body arrived slower than {limits.min_rate_bytes_s / KIB:g} KiB/s "
                f"or took longer than {limits.body_timeout_s:g} s.", code="body_timeout")
        return RequestTimeout("The client kept sending after the answer.", code="linger_timeout")
