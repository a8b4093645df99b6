"""PacedSocket: every read and write of a client has a deadline (socket pairs)."""

from __future__ import annotations

import socket
import time

import pytest

from isnet_wsgi.server.client_limits import (
    ClientLimits,
    ClientTooSlowToRead,
    PacedSocket,
)
from isnet_wsgi.web.http import RequestTimeout

FAST = ClientLimits(head_timeout_s=0.3, grace_s=0.2, min_rate_bytes_s=1000,
                    body_timeout_s=1.0, linger_s=1.0, linger_max_bytes=5000)


@pytest.fixture
def pair():
    server, client = socket.socketpair()
    with server, client:
        yield PacedSocket(server, FAST), client


def test_a_head_that_does_not_arrive_in_time_is_a_408(pair):
    paced, client = pair
    client.sendall(b"GET / HTTP/1.1\r\n")
    assert paced.recv(100) == b"GET / HTTP/1.1\r\n"
    started = time.monotonic()
    with pytest.raises(RequestTimeout) as timeout:
        paced.recv(100)
    assert timeout.value.code == "header_timeout"
    assert 0.2 < time.monotonic() - started < 0.6
    assert paced.recv(100) == b""  # a timed-out client is not read any further


def test_a_body_at_the_minimum_rate_is_read_and_a_slower_one_is_not(pair):
    paced, client = pair
    paced.start_body()
    for _ in range(4):  # 400 bytes every 0.1 s: 4000 B/s, above the 1000 B/s floor
        client.sendall(b"x" * 400)
        assert len(paced.recv(1000)) == 400
        time.sleep(0.1)
    time.sleep(1.6 - (time.monotonic() - paced._started))  # 1600 bytes buy 1.6 s
    client.sendall(b"late")
    with pytest.raises(RequestTimeout) as timeout:
        paced.recv(1000)
    assert timeout.value.code == "body_timeout"


def test_the_body_timeout_caps_even_a_fast_client(pair):
    paced, client = pair
    paced.start_body()
    deadline = time.monotonic() + FAST.body_timeout_s + 0.5
    with pytest.raises(RequestTimeout):
        while time.monotonic() < deadline:
            client.sendall(b"x" * 2000)
            paced.recv(4000)
            time.sleep(0.05)
    assert time.monotonic() < deadline


def test_lingering_stops_after_its_byte_budget(pair):
    paced, client = pair
    paced.start_linger()
    client.sendall(b"x" * 8000)
    read = 0
    while chunk := paced.recv(1000):
        read += len(chunk)
    assert read == FAST.linger_max_bytes


def test_a_client_that_does_not_read_the_answer_is_dropped():
    server, client = socket.socketpair()
    with server, client:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        limits = ClientLimits(grace_s=0.2, min_rate_bytes_s=1_000_000)
        paced = PacedSocket(server, limits)
        started = time.monotonic()
        with pytest.raises(ClientTooSlowToRead):
            paced.sendall(b"x" * 500_000)  # 0.2 s of grace + 0.5 s at 1 MB/s; never read
        assert 0.6 < time.monotonic() - started < 1.2


def test_after_shutdown_the_socket_is_plain(pair):
    paced, client = pair
    paced.shutdown(socket.SHUT_WR)
    time.sleep(FAST.head_timeout_s + 0.1)  # past every deadline: none applies now
    client.sendall(b"bye")
    assert paced.recv(10) == b"bye"
