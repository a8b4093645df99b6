"""The connections the one worker holds while it serves another.

gunicorn's sync worker serves connections in the order the kernel queued
them, and waits on each until its request is in: 20 clients dripping their
headers kept a health probe waiting 99.5 s (issue 32). The pool accepts every
pending connection and reads them all without waiting on any, as nginx does
before it hands a request upstream; the worker takes the next whole request,
bodiless ones first. A client that misses a deadline (``read_deadline``'s,
the head's from the connection) gets its 408 here, without taking a turn.
Bounds: ``max_held_connections`` (past it, the oldest unfinished connection
gets a 503) and ``waiting_bodies_bytes`` (past it, no body is read until one
is served). After the answer the pool lingers on the socket, not the worker.
docs/slow-clients.md says why each rule is what it is, and what it cost.

No gunicorn here: sockets in, sockets out, and an injectable clock.
"""

from __future__ import annotations

import errno
import os
import selectors
import socket
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable

from ..web.errors import HTTPError, ServiceUnavailable
from ..web.upload import FORM_OVERHEAD_BYTES
from .client_limits import ClientLimits, read_deadline, timeout_error
from .framing import CONTINUE, HEAD_BUFFER_BYTES, declared_body_bytes, head_end, raw_response
from .framing import without_expect_continue

KIB = 1024
MIB = 1024 * KIB
READ_CHUNK_BYTES = 64 * KIB
# A client refused for room may come back this soon.
RETRY_AFTER_S = 1
_LISTENER, _WAKEUP = object(), object()


@dataclass(frozen=True)
class PoolLimits:
    max_held_connections: int = 256
    waiting_bodies_bytes: int = 32 * MIB
    # Bodies declared larger go to the worker at once, for the app's 413.
    largest_held_body_bytes: int = 8 * MIB + FORM_OVERHEAD_BYTES

    @classmethod
    def from_settings(cls, settings) -> "PoolLimits":
        return cls(max_held_connections=settings.max_held_connections,
                   waiting_bodies_bytes=int(settings.waiting_bodies_mb * MIB),
                   largest_held_body_bytes=settings.max_upload_bytes + FORM_OVERHEAD_BYTES)


class Held:
    """One connection the pool holds: its socket and what was read from it."""

    __slots__ = ("sock", "fd", "addr", "listener", "connected_at", "data", "phase", "started",
                 "received", "body_bytes", "counted")

    def __init__(self, sock: socket.socket, addr, listener, now: float, phase: str = "head"):
        self.sock, self.addr, self.listener = sock, addr, listener
        self.fd = sock.fileno()  # its key in the pool, even once closed
        self.connected_at = self.started = now
        self.data = bytearray()
        # head -> (body ->) ready -> taken by the worker; linger after an answer.
        self.phase = phase
        self.received = 0  # bytes of this phase (body, or what lingering threw away)
        self.body_bytes = 0  # what the head declared
        self.counted = 0  # body bytes held against waiting_bodies_bytes


class ConnectionPool:
    """Every connection the worker holds but does not serve right now."""

    def __init__(self, client_limits: ClientLimits, limits: PoolLimits, *,
                 clock: Callable[[], float] = time.monotonic,
                 log: Callable[[str], None] | None = None):
        self.client_limits, self.limits = client_limits, limits
        self.clock = clock
        self._log = log or (lambda message: None)
        self._selector = selectors.DefaultSelector()
        self._held: dict[int, Held] = {}  # in the order they connected
        self._ready_without_body: deque[Held] = deque()
        self._ready_with_body: deque[Held] = deque()
        self._listeners: list[socket.socket] = []
        self.accepting = True
        self._bodies_paused_at: float | None = None
        self._busy_since: float | None = None  # the worker serves what it took
        self.buffered_body_bytes = 0

    def __len__(self) -> int:
        return len(self._held)

    def watch(self, listener: socket.socket) -> None:
        listener.setblocking(False)
        self._listeners.append(listener)
        self._selector.register(listener, selectors.EVENT_READ, _LISTENER)

    def watch_wakeup(self, fd: int) -> None:
        """A pipe that a signal writes to (gunicorn's): it ends a wait early."""
        self._selector.register(fd, selectors.EVENT_READ, _WAKEUP)

    def poll(self, timeout_s: float) -> None:
        """Accept, read what has arrived (waiting at most ``timeout_s`` for
        anything), answer the connections past their deadlines."""
        self._after_busy()
        wait_s = timeout_s
        deadline = self.next_deadline()
        if deadline is not None:
            wait_s = max(0.0, min(wait_s, deadline - self.clock()))
        for key, _ in self._selector.select(wait_s):
            if key.data is _LISTENER:
                self._accept_all(key.fileobj)
            elif key.data is _WAKEUP:
                try:
                    os.read(key.fd, 64)
                except OSError:
                    pass
            elif self._held.get(key.fd) is key.data:  # not closed earlier in this batch
                self._read(key.data)
        self._expire()
        self._keep_to_budget()

    def take(self) -> Held | None:
        """The next whole request, bodiless ones first; the pool lets it go."""
        queue = self._ready_without_body or self._ready_with_body
        if not queue:
            return None
        held = queue.popleft()
        self._forget(held)
        held.sock.setblocking(True)
        self._busy_since = self.clock()
        return held

    def next_deadline(self) -> float | None:
        deadlines = [self._deadline(held) for held in self._held.values()
                     if held.phase != "ready" and not self._paused(held)]
        return min(deadlines, default=None)

    def linger(self, sock: socket.socket) -> None:
        """Read and throw away what a client answered still sends, then close."""
        try:
            sock.setblocking(False)
            held = Held(sock, None, None, self.clock(), phase="linger")
            self._hold(held)
        except (OSError, ValueError):  # gone already
            sock.close()

    def stop_accepting(self) -> None:
        if self.accepting:
            self.accepting = False
            for listener in self._listeners:
                self._selector.unregister(listener)

    def close_all(self) -> None:
        """Shutting down: a client whose request is not served is told to come back."""
        for held in list(self._held.values()):
            if held.phase != "linger":
                self._send(held, ServiceUnavailable(
                    "The worker is restarting; send the request again.",
                    code="restarting", retry_after_s=RETRY_AFTER_S))
            self._close(held)

    # --- Accepting ------------------------------------------------------------
    def _accept_all(self, listener: socket.socket) -> None:
        while self.accepting:
            try:
                sock, addr = listener.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as error:
                if error.errno not in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    raise
                self._log(f"Accepting a connection failed ({error}): dropping the oldest "
                          f"unfinished one")
                self._make_room()
                return
            sock.setblocking(False)
            held = Held(sock, addr, listener, self.clock())
            self._hold(held)
            self._read(held)  # a client's request is often there with its connection
            if len(self._held) > self.limits.max_held_connections:
                self._make_room()

    def _make_room(self) -> None:
        """Close the oldest lingering connection, or else answer the oldest
        whose request is not whole (the one just accepted, if need be) with
        a 503: a whole request is never dropped."""
        for phases in (("linger",), ("head", "body")):
            for held in self._held.values():
                if held.phase in phases:
                    if held.phase != "linger":
                        self._log(f"Too many connections: dropped the oldest unfinished "
                                  f"one, from ip={_ip(held)}")
                        self._send(held, ServiceUnavailable(
                            "The server holds too many unfinished requests.",
                            code="too_many_connections", retry_after_s=RETRY_AFTER_S))
                    self._close(held)
                    return

    # --- Reading --------------------------------------------------------------
    def _read(self, held: Held) -> None:
        """All that has arrived: the worker may have been busy for seconds."""
        while held.phase in ("head", "body", "linger") and not self._over_budget(held):
            if held.phase == "body":
                size = min(READ_CHUNK_BYTES, held.body_bytes - held.received)
            elif held.phase == "head":  # one byte past the bound says "too long"
                size = HEAD_BUFFER_BYTES + 1 - len(held.data)
            else:
                size = READ_CHUNK_BYTES
            try:
                chunk = held.sock.recv(size)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                chunk = b""
            if not chunk:  # the client went away (or finished, when lingering)
                self._close(held)
                return
            if held.phase == "linger":
                held.received += len(chunk)
                if held.received >= self.client_limits.linger_max_bytes:
                    self._close(held)
            elif held.phase == "head":
                held.data += chunk
                self._after_head_bytes(held)
            else:
                held.data += chunk
                self._count_body(held, len(chunk))
                if held.received >= held.body_bytes:
                    self._ready(held)

    def _over_budget(self, held: Held) -> bool:
        return (held.phase == "body"
                and self.buffered_body_bytes >= self.limits.waiting_bodies_bytes)

    def _after_head_bytes(self, held: Held) -> None:
        end = head_end(held.data)
        if end is None:
            if len(held.data) > HEAD_BUFFER_BYTES:
                self._ready(held)  # for gunicorn to refuse, or to read on
            return
        head = bytes(held.data[:end])
        declared = declared_body_bytes(head)
        if declared is None or declared > self.limits.largest_held_body_bytes:
            self._ready(held)  # the body streams, or the app refuses its size at once
            return
        answered = without_expect_continue(head)
        if answered is not None:  # the client waits for a 100 before its body
            held.data[:end] = answered
            end = len(answered)
            if len(held.data) - end < declared:
                self._send_bytes(held, CONTINUE)
        held.body_bytes = declared
        held.phase, held.started = "body", self.clock()
        self._count_body(held, len(held.data) - end)
        if held.received >= declared:
            self._ready(held, without_body=declared == 0)
        elif self._bodies_paused_at is not None:
            self._watch(held, False)

    def _count_body(self, held: Held, size: int) -> None:
        held.received += size
        held.counted += size
        self.buffered_body_bytes += size

    def _ready(self, held: Held, *, without_body: bool = False) -> None:
        self._watch(held, False)
        held.phase = "ready"
        (self._ready_without_body if without_body else self._ready_with_body).append(held)

    # --- Deadlines and the body budget ----------------------------------------
    def _deadline(self, held: Held) -> float:
        # The head's deadline counts from the connection, the others from
        # their start (moved on by the time the pool could not read them).
        started = held.connected_at if held.phase == "head" else held.started
        deadline = read_deadline(held.phase, started, held.received, self.client_limits)
        if held.phase == "body":  # however long the worker was busy, no longer than this
            limits = self.client_limits
            deadline = min(deadline,
                           held.connected_at + limits.head_timeout_s + limits.body_timeout_s)
        return deadline

    def _after_busy(self) -> None:
        """The worker served a request; the pool read nobody meanwhile.

        NOTE: a body's rate clock stops while the pool cannot read it: the
        client was held back by its full socket buffer, not slow. A head's
        deadline does not stop: whatever arrived meanwhile is read before
        any deadline is looked at.
        """
        if self._busy_since is None:
            return
        busy_s = self.clock() - self._busy_since
        self._busy_since = None
        for held in self._held.values():
            if held.phase == "linger" or (held.phase == "body" and not self._paused(held)):
                held.started += busy_s

    def _paused(self, held: Held) -> bool:
        return held.phase == "body" and self._bodies_paused_at is not None

    def _expire(self) -> None:
        now = self.clock()
        for held in list(self._held.values()):
            if held.phase == "ready" or self._paused(held) or now < self._deadline(held):
                continue
            if held.phase == "linger":
                self._close(held)
                continue
            error = timeout_error(held.phase, self.client_limits)
            self._log(f"Invalid request from ip={_ip(held)}: {error.code} (held "
                      f"{now - held.connected_at:.1f} s, never served)")
            self._send(held, error)
            self._start_linger(held)

    def _keep_to_budget(self) -> None:
        """Past the budget no body is read; when no request is whole either,
        the body furthest along goes to the worker to stream the rest."""
        over = self.buffered_body_bytes >= self.limits.waiting_bodies_bytes
        waiting = [held for held in self._held.values() if held.phase == "body"]
        if over and self._bodies_paused_at is None:
            self._bodies_paused_at = self.clock()
            for held in waiting:
                self._watch(held, False)
        elif not over and self._bodies_paused_at is not None:
            # PERF: the time paused is not the client's: its rate clock stops too.
            paused_s = self.clock() - self._bodies_paused_at
            self._bodies_paused_at = None
            for held in waiting:
                held.started += paused_s
                self._watch(held, True)
        if over and waiting and not (self._ready_without_body or self._ready_with_body):
            self._ready(max(waiting, key=lambda held: held.received))

    # --- Holding, answering, closing ------------------------------------------
    def _hold(self, held: Held) -> None:
        self._selector.register(held.sock, selectors.EVENT_READ, held)
        self._held[held.fd] = held

    def _registered(self, held: Held) -> bool:
        try:
            return self._selector.get_key(held.sock).data is held
        except (KeyError, ValueError):
            return False

    def _watch(self, held: Held, reading: bool) -> None:
        """Read this connection's bytes as they arrive, or leave them waiting."""
        if reading and not self._registered(held):
            self._selector.register(held.sock, selectors.EVENT_READ, held)
        elif not reading and self._registered(held):
            self._selector.unregister(held.sock)

    def _forget(self, held: Held) -> None:
        self._watch(held, False)
        self._held.pop(held.fd, None)
        self.buffered_body_bytes -= held.counted
        held.counted = 0

    def _send(self, held: Held, error: HTTPError) -> None:
        self._send_bytes(held, raw_response(error.to_response()))

    def _send_bytes(self, held: Held, data: bytes) -> None:
        # NOTE: a few hundred bytes into an empty send buffer: never blocks;
        # a client whose buffer is full does not get it.
        try:
            held.sock.send(data)
        except OSError:
            pass

    def _start_linger(self, held: Held) -> None:
        """The answer is sent: throw away what the client still sends, bounded."""
        try:
            held.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._close(held)
            return
        self._watch(held, True)
        self.buffered_body_bytes -= held.counted
        held.counted = held.received = 0
        held.data = bytearray()
        held.phase, held.started = "linger", self.clock()

    def _close(self, held: Held) -> None:
        if held.phase == "ready":
            for queue in (self._ready_without_body, self._ready_with_body):
                if held in queue:
                    queue.remove(held)
        self._forget(held)
        held.sock.close()


def _ip(held: Held) -> str:
    return str((held.addr or ("",))[0])
