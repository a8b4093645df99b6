"""PacedSocket: every read and write of a client has a deadline (socket pairs).

The deadlines run on an injected clock: a test moves time, it never waits.
"""

from __future__ import annotations

import socket

import pytest

from isnet_wsgi.server.client_limits import (
    ClientLimits,
    ClientTooSlowToRead,
    PacedSocket,
    read_deadline,
)
from isnet_wsgi.web.errors import RequestTimeout

FAST = ClientLimits(head_timeout_s=5.0, grace_s=2.0, min_rate_bytes_s=1000,
                    body_timeout_s=10.0, linger_s=5.0, linger_max_bytes=5000)


class Clock:
    """Time that moves only when a test says so."""

    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def pair(clock):
    server, client = socket.socketpair()
    with server, client:
        yield PacedSocket(server, FAST, clock=clock), client


def test_a_head_that_does_not_arrive_in_time_is_a_408(pair, clock):
    paced, client = pair
    client.sendall(b"GET / HTTP/1.1\r\n")
    clock.now += FAST.head_timeout_s - 0.01
    assert paced.recv(100) == b"GET / HTTP/1.1\r\n"
    clock.now += 0.01
    client.sendall(b"Host: x\r\n")  # there, but too late
    with pytest.raises(RequestTimeout) as timeout:
        paced.recv(100)
    assert timeout.value.code == "header_timeout"
    assert paced.recv(100) == b""  # a timed-out client is not read any further


def test_the_head_deadline_counts_from_the_connection(clock):
    server, client = socket.socketpair()
    with server, client:
        paced = PacedSocket(server, FAST, clock=clock, connected_at=clock.now - FAST.head_timeout_s)
        client.sendall(b"GET / HTTP/1.1\r\n")
        with pytest.raises(RequestTimeout):
            paced.recv(100)


def test_a_body_at_the_minimum_rate_is_read_and_a_slower_one_is_not(pair, clock):
    paced, client = pair
    paced.start_body()
    for _ in range(4):  # 400 bytes every 0.1 s: 4000 B/s, above the 1000 B/s floor
        client.sendall(b"x" * 400)
        assert len(paced.recv(1000)) == 400
        clock.now += 0.1
    clock.now += 2.0  # 1600 bytes buy 1.6 s, the grace 2 s: now 2.4 s in
    client.sendall(b"late")
    with pytest.raises(RequestTimeout) as timeout:
        paced.recv(1000)
    assert timeout.value.code == "body_timeout"


def test_the_body_timeout_caps_even_a_fast_client(pair, clock):
    paced, client = pair
    paced.start_body()
    for _ in range(int(FAST.body_timeout_s)):
        client.sendall(b"x" * 4000)  # 4x the minimum rate
        assert len(paced.recv(4000)) == 4000
        clock.now += 1.0
    client.sendall(b"x")
    with pytest.raises(RequestTimeout):
        paced.recv(4000)


def test_the_deadline_rule():
    assert read_deadline("head", 10.0, 123, FAST) == 15.0
    assert read_deadline("body", 10.0, 0, FAST) == 12.0  # the grace
    assert read_deadline("body", 10.0, 3000, FAST) == 13.0  # 3000 B at 1000 B/s
    assert read_deadline("body", 10.0, 10**9, FAST) == 20.0  # the body timeout
    assert read_deadline("linger", 10.0, 0, FAST) == 10.5
    assert read_deadline("closed", 10.0, 0, FAST) is None


def test_what_the_pool_read_before_comes_first_and_is_not_timed(clock):
    server, client = socket.socketpair()
    with server, client:
        paced = PacedSocket(server, FAST, clock=clock, buffered=bytearray(b"GET / HTTP/1.1\r\n\r\n"),
                            connected_at=clock.now - 60)
        assert paced.recv(5) == b"GET /"
        assert paced.recv(100) == b" HTTP/1.1\r\n\r\n"
        with pytest.raises(RequestTimeout):  # then the socket, under the head deadline
            paced.recv(100)


def test_a_client_that_does_not_read_the_answer_is_dropped():
    server, client = socket.socketpair()
    with server, client:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        # NOTE: socket timeouts run on the real clock: 0.05 s of grace + 0.1 s.
        paced = PacedSocket(server, ClientLimits(grace_s=0.05, min_rate_bytes_s=5_000_000))
        with pytest.raises(ClientTooSlowToRead):
            paced.sendall(b"x" * 500_000)  # never read


def test_after_shutdown_the_socket_is_plain(pair, clock):
    paced, client = pair
    paced.shutdown(socket.SHUT_WR)
    clock.now += FAST.head_timeout_s + 1  # past every deadline: none applies now
    client.sendall(b"bye")
    assert paced.recv(10) == b"bye"


def test_closing_hands_the_socket_over_once_without_draining_it(clock):
    server, client = socket.socketpair()
    taken = []
    with server, client:
        paced = PacedSocket(server, FAST, clock=clock, on_close=taken.append)
        client.sendall(b"more body")
        paced.shutdown(socket.SHUT_WR)
        assert paced.recv(100) == b""  # gunicorn's drain ends at once: the pool lingers
        paced.close()
        paced.close()  # gunicorn closes twice after an error mid-answer
        paced.shutdown(socket.SHUT_WR)
        assert taken == [server]
        assert server.recv(100) == b"more body"  # not closed: the pool has it
