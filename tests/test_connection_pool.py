"""ConnectionPool: connections read as they arrive, whole requests handed over,
slow ones answered without a turn; over loopback, on an injected clock."""

from __future__ import annotations

import json
import select
import socket
import time
from contextlib import ExitStack

import pytest

from isnet_wsgi.server.connections import ConnectionPool, PoolLimits
from isnet_wsgi.server.framing import (
    CONTINUE,
    HEAD_BUFFER_BYTES,
    declared_body_bytes,
    head_end,
    without_expect_continue,
)
from tests.system.server import read_response
from tests.test_client_limits import FAST as LIMITS
from tests.test_client_limits import Clock

HEALTH = b"GET /api/bg/health HTTP/1.1\r\nHost: x\r\n\r\n"
# How long a test waits for loopback bytes to reach the pool (real time; the
# deadlines under test run on the fake clock).
ARRIVAL_S = 5.0


def upload(body: bytes, declared: int | None = None) -> bytes:
    length = len(body) if declared is None else declared
    return (b"POST /api/bg/remove HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
            b"Content-Length: %d\r\n\r\n" % length) + body


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def make_pool(clock):
    """A pool on a loopback listener, and clients connected to it; all closed after."""
    with ExitStack() as stack:
        def make(limits: PoolLimits | None = None):
            listener = stack.enter_context(socket.create_server(("127.0.0.1", 0)))
            pool = ConnectionPool(LIMITS, limits or PoolLimits(), clock=clock)
            pool.watch(listener)
            stack.callback(pool.close_all)

            def connect(data: bytes = b"") -> socket.socket:
                client = stack.enter_context(
                    socket.create_connection(listener.getsockname(), timeout=ARRIVAL_S))
                client.sendall(data)
                return client
            return pool, connect
        yield make


def poll_until(pool: ConnectionPool, condition) -> None:
    deadline = time.monotonic() + ARRIVAL_S
    while not condition():
        assert time.monotonic() < deadline, "the bytes never reached the pool"
        pool.poll(0.01)


def held_count(pool: ConnectionPool, count: int):
    return lambda: len(pool) == count


def json_error(client: socket.socket) -> tuple[int, dict, dict]:
    status, headers, body = read_response(client, ARRIVAL_S)
    return status, headers, json.loads(body)


def test_whole_requests_are_handed_over_bodiless_first(make_pool):
    pool, connect = make_pool()
    connect(upload(b"x" * 3000))
    connect(HEALTH)
    poll_until(pool, lambda: pool.buffered_body_bytes == 3000 and len(pool) == 2
               and all(held.phase == "ready" for held in pool._held.values()))
    first, second = pool.take(), pool.take()
    assert bytes(first.data) == HEALTH
    assert bytes(second.data) == upload(b"x" * 3000)
    assert pool.take() is None and len(pool) == 0 and pool.buffered_body_bytes == 0
    for held in (first, second):
        held.sock.close()


def test_a_slow_head_gets_its_408_from_the_pool_and_never_a_turn(make_pool, clock):
    pool, connect = make_pool()
    slow = connect(b"GET /api/bg/health HTTP/1.1\r\n")
    poll_until(pool, held_count(pool, 1))
    clock.now += LIMITS.head_timeout_s - 0.1
    pool.poll(0)
    assert pool.take() is None and len(pool) == 1
    clock.now += 0.1
    pool.poll(0)
    status, headers, error = json_error(slow)
    assert (status, error["error"]) == (408, "header_timeout")
    assert headers["connection"] == "close"
    assert pool.take() is None


def test_a_body_below_the_minimum_rate_gets_its_408(make_pool, clock):
    pool, connect = make_pool()
    slow = connect(upload(b"x" * 1500, declared=100_000))
    poll_until(pool, lambda: pool.buffered_body_bytes == 1500)
    clock.now += 1.9  # within the grace
    pool.poll(0)
    assert len(pool) == 1
    clock.now += 0.1  # 2 s: the grace is over and 1500 B bought only 1.5 s
    pool.poll(0)
    status, _, error = json_error(slow)
    assert (status, error["error"]) == (408, "body_timeout")
    assert pool.buffered_body_bytes == 0


def test_a_body_waits_out_the_worker_s_request_but_not_past_its_hard_limit(make_pool, clock):
    pool, connect = make_pool()
    uploader = connect(upload(b"x" * 100, declared=100_000))
    connect(HEALTH)
    poll_until(pool, lambda: pool._ready_without_body and pool.buffered_body_bytes == 100)
    served = pool.take()  # the worker is busy with it for 8 s: the pool reads nobody
    clock.now += 8
    uploader.sendall(b"x" * 900)  # 1000 B buy 1 s of 8: but the 8 s were not its fault
    poll_until(pool, lambda: pool.buffered_body_bytes == 1000)
    uploader.sendall(b"x" * 99_000)
    poll_until(pool, lambda: pool._ready_with_body)
    assert pool.take().received == 100_000
    served.sock.close()
    # However often the worker is busy, a body ends by head + upload timeout.
    slow = connect(upload(b"x" * 100, declared=100_000))
    poll_until(pool, lambda: pool.buffered_body_bytes == 100)
    for _ in range(2):
        connect(HEALTH)
        poll_until(pool, lambda: pool._ready_without_body)
        pool.take().sock.close()
        clock.now += (LIMITS.head_timeout_s + LIMITS.body_timeout_s) / 2
        pool.poll(0)
    status, _, error = json_error(slow)
    assert (status, error["error"]) == (408, "body_timeout")


def test_past_the_connection_limit_the_oldest_unfinished_one_gets_a_503(make_pool):
    pool, connect = make_pool(PoolLimits(max_held_connections=2))
    oldest = connect(b"GET /")
    connect(HEALTH)
    poll_until(pool, held_count(pool, 2))
    connect(b"GET /api")
    poll_until(pool, lambda: select.select([oldest], [], [], 0)[0])
    status, headers, error = json_error(oldest)
    assert (status, error["error"], headers["retry-after"]) == (503, "too_many_connections", "1")
    poll_until(pool, held_count(pool, 2))
    assert bytes(pool.take().data) == HEALTH  # a whole request is never the one dropped


def test_past_the_body_budget_reading_stops_and_the_furthest_along_streams(make_pool, clock):
    pool, connect = make_pool(PoolLimits(waiting_bodies_bytes=4000))
    connect(upload(b"a" * 3000, declared=50_000))
    poll_until(pool, lambda: pool.buffered_body_bytes == 3000)
    second = connect(upload(b"b" * 2000, declared=50_000))
    poll_until(pool, lambda: pool.buffered_body_bytes == 5000)
    # Over the budget: nothing more is read, no rate clock runs (2000 B buy
    # 2 s; 3 s pass), and the body furthest along goes to the worker to
    # stream the rest.
    clock.now += 3
    second.sendall(b"b" * 1000)
    pool.poll(0)
    held = pool.take()
    assert bytes(held.data).endswith(b"a" * 3000)
    assert pool.buffered_body_bytes == 2000 and len(pool) == 1
    held.sock.close()
    # Under the budget again: the second body is read on, its clock not run down.
    poll_until(pool, lambda: pool.buffered_body_bytes == 3000)
    assert len(pool) == 1 and not select.select([second], [], [], 0)[0]  # no 408


@pytest.mark.parametrize("request_bytes", [
    upload(b"", declared=9 * 1024 * 1024),  # the app's 413, at once
    b"POST /api/bg/remove HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
    (b"POST /api/bg/remove HTTP/1.1\r\nHost: x\r\nExpect: 200-ok\r\n"
     b"Content-Length: 10\r\n\r\n"),  # gunicorn's 417, at once
    b"GET /api/bg/health HTTP/1.1\nHost: x\n\n",  # bare LF: gunicorn's 400, at once
    b"GET /" + b"a" * (HEAD_BUFFER_BYTES + 10),  # gunicorn's 414, at once
])
def test_what_gunicorn_or_the_app_must_judge_goes_at_once(make_pool, request_bytes):
    pool, connect = make_pool()
    connect(request_bytes)
    poll_until(pool, lambda: pool._ready_with_body or pool._ready_without_body)
    pool.take().sock.close()


def test_a_client_that_expects_100_continue_gets_it_from_the_pool_and_only_once(make_pool):
    pool, connect = make_pool()
    head = (b"POST /api/bg/remove HTTP/1.1\r\nHost: x\r\nExpect: 100-Continue\r\n"
            b"Content-Length: 5\r\n\r\n")
    client = connect(head)
    client.settimeout(ARRIVAL_S)
    poll_until(pool, lambda: select.select([client], [], [], 0)[0])
    assert client.recv(100) == CONTINUE
    client.sendall(b"hello")
    poll_until(pool, lambda: pool._ready_with_body)
    held = pool.take()
    # gunicorn sees no expectation left, so it sends no second 100.
    assert bytes(held.data) == head.replace(b"Expect: 100-Continue\r\n", b"") + b"hello"
    held.sock.close()


@pytest.mark.parametrize("head, answered", [
    (b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
     b"POST / HTTP/1.1\r\nContent-Length: 1\r\n\r\n"),
    (b"POST / HTTP/1.1\r\nContent-Length: 1\r\n\r\n", None),
    (b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n", None),
])
def test_the_expectation_the_pool_answers(head, answered):
    assert without_expect_continue(head) == answered


def test_lingering_throws_away_what_follows_the_answer_then_closes(make_pool, clock):
    pool, connect = make_pool()
    client = connect(HEALTH)
    poll_until(pool, lambda: pool._ready_without_body)
    held = pool.take()
    held.sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    held.sock.shutdown(socket.SHUT_WR)
    pool.linger(held.sock)
    client.sendall(b"y" * 400)
    assert read_response(client, ARRIVAL_S)[0] == 200
    poll_until(pool, lambda: pool._held and next(iter(pool._held.values())).received == 400)
    clock.now += 0.5  # the linger's grace; 400 B at 1000 B/s buy no more
    pool.poll(0)
    assert len(pool) == 0


def test_on_exit_the_clients_left_are_told_to_come_back(make_pool):
    pool, connect = make_pool()
    waiting = connect(b"GET /api/bg/")
    poll_until(pool, held_count(pool, 1))
    pool.stop_accepting()
    connect(HEALTH)
    pool.poll(0.05)
    assert len(pool) == 1  # not accepted: the next worker will
    pool.close_all()
    status, headers, error = json_error(waiting)
    assert (status, error["error"], headers["retry-after"]) == (503, "restarting", "1")


@pytest.mark.parametrize("head, declared", [
    (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 0),
    (b"POST / HTTP/1.1\r\nContent-Length: 12\r\n\r\n", 12),
    (b"POST / HTTP/1.1\r\ncontent-length:  7 \r\n\r\n", 7),
    (b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n", None),
    (b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", None),
    (b"POST / HTTP/1.1\r\nContent-Length: 0x10\r\n\r\n", None),
    (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", None),
    (b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n", 3),
    (b"POST / HTTP/1.1\r\nExpect: 200-ok\r\nContent-Length: 3\r\n\r\n", None),
])
def test_the_declared_body(head, declared):
    assert declared_body_bytes(head) == declared


def test_where_the_head_ends():
    assert head_end(bytearray(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nbody")) == 27
    assert head_end(bytearray(b"GET / HTTP/1.1\nHost: x\n\nbody")) == 24
    assert head_end(bytearray(b"GET / HTTP/1.1\r\nHost: x\r\n")) is None
