"""Many slow clients cannot stall the one worker; well-behaved clients see no
change: keep-alive, pipelining, shutdown and recycling. Real gunicorn, loopback."""

from __future__ import annotations

import itertools
import json
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

from bench.slow_clients import SlowClients
from tests.helpers import encode_image, multipart_body, photo_bytes
from tests.system import cgroups
from tests.system.server import read_response, running_gunicorn
from tests.system.test_container_limit import memory_cgroup, workload
from tests.system.test_decode_budget import filename_for, make_run_env

HEALTH = b"GET /api/bg/health HTTP/1.1\r\nHost: x\r\n\r\n"
# Seconds of full-size work beside the attack in 256 MiB.
LOAD_S = 8.0


def fresh_photo(seed: int) -> bytes:
    """A photo no earlier request sent: the result cache cannot answer it."""
    pixels = np.random.default_rng(seed).integers(0, 256, (320, 320, 3), dtype=np.uint8)
    return encode_image(Image.fromarray(pixels), "PNG")


def timed(call):
    started = time.monotonic()
    result = call()
    return result, time.monotonic() - started


def test_20_slow_connections_and_3_slow_uploads_do_not_stall_the_worker(server):
    # Before the connection pool each one took its 5 s turn: health after ~100 s.
    # The clients here give up as a probe does: health after 2 s, a removal after 5 s.
    with SlowClients(server.port, heads=20, uploads=3) as attack:
        time.sleep(1.0)  # every slow connection is held now, none timed out yet
        health, health_s = timed(lambda: server.request("GET", "/api/bg/health", timeout_s=2))
        removal, removal_s = timed(lambda: server.upload("/api/bg/remove", fresh_photo(1),
                                                         timeout_s=5))
    print(f"under 20 slow connections and 3 slow uploads: health {health_s:.2f} s, "
          f"removal {removal_s:.2f} s; the attackers saw {dict(attack.answers)}")
    assert attack.answers["not connected"] == 0
    assert health[0] == 200 and json.loads(health[2])["status"] == "healthy"
    assert removal[0] == 200
    # Everything normal afterwards.
    assert server.upload("/api/bg/remove", fresh_photo(2))[0] == 200


def test_a_keep_alive_client_gets_every_answer_on_fresh_connections(server):
    from http.client import HTTPConnection
    connection = HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        for _ in range(3):  # http.client reconnects after each Connection: close
            connection.request("GET", "/api/bg/health", headers={"Connection": "keep-alive"})
            response = connection.getresponse()
            assert response.status == 200 and json.loads(response.read())["status"] == "healthy"
            assert response.getheader("Connection") == "close"
    finally:
        connection.close()


def test_pipelined_requests_get_the_first_answer_whole_then_a_clean_close(server):
    # One request per connection (gunicorn's sync worker): the rest of a
    # pipeline goes unanswered, and a client sends it again (RFC 9112 9.3.2).
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(HEALTH + b"GET /api/bg/status HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, body = read_response(sock)
        assert (status, headers["connection"]) == (200, "close")
        assert json.loads(body)["status"] == "healthy"
        assert sock.recv(100) == b""


def test_an_upload_that_expects_100_continue_gets_one_then_its_answer(server):
    # curl sends bodies over 1 MB this way; the pool answers the expectation.
    body, content_type = multipart_body(fresh_photo(4), "photo.png")
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(b"POST /api/bg/remove HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                     b"Content-Type: %s\r\nContent-Length: %d\r\n\r\n"
                     % (content_type.encode(), len(body)))
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        status, headers, answer = read_response(sock)
    assert (status, headers["content-type"]) == (200, "image/png") and answer


def test_sigterm_finishes_the_request_in_flight_and_the_whole_ones_waiting(tmp_path):
    with running_gunicorn(tmp_path) as server:
        in_flight = server.send_upload("/api/bg/remove", photo_bytes("astronaut.png"))
        time.sleep(0.3)
        waiting = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        unfinished = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        with waiting, unfinished:
            waiting.sendall(HEALTH)
            unfinished.sendall(b"GET /api/bg/health HTTP/1.1\r\n")
            time.sleep(0.2)
            server.process.send_signal(signal.SIGTERM)
            response = in_flight.getresponse()
            assert response.status == 200 and response.read()
            in_flight.close()
            assert read_response(waiting)[0] == 200
            status, _, body = read_response(unfinished)
            assert status in (408, 503) and json.loads(body)["error"]  # told, never dropped
        assert server.process.wait(timeout=60) == 0


def test_a_recycled_worker_serves_the_requests_it_held_before_it_goes(tmp_path):
    with running_gunicorn(tmp_path, MAX_REQUESTS="2", MAX_REQUESTS_JITTER="0") as server:
        first = server.json("/api/bg/status")["worker_pid"]  # request 1
        answers = []
        last = threading.Thread(target=lambda: answers.append(
            server.upload("/api/bg/remove", fresh_photo(3))[0]))  # request 2: the last
        last.start()
        time.sleep(0.3)
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as held:
            held.sendall(HEALTH)  # whole, waiting while the last request runs
            assert read_response(held)[0] == 200
        last.join(timeout=60)
        assert answers == [200]
        assert server.wait_healthy(timeout_s=30, not_pid=first)["worker_pid"] != first


def test_the_attack_and_four_clients_of_full_size_work_in_256_mib_cause_no_oom_kill(tmp_path):
    """The issue's bar (50 slow connections, 10 slow uploads) beside four
    clients of full-size work (tests/system/test_container_limit.py's mix),
    in a 256 MiB memory cgroup: no OOM kill, one worker throughout."""
    cases = workload()
    with memory_cgroup(256) as group, running_gunicorn(
            tmp_path, command_prefix=cgroups.enter_command(group.path), env=make_run_env(),
            CACHE_MB="0") as server:
        workers = server.worker_pids()
        answers, health_s = [], []
        deadline = time.monotonic() + LOAD_S

        def client(offset: int) -> None:
            for turn in itertools.count(offset):
                if time.monotonic() >= deadline:
                    return
                _, data = cases[turn % len(cases)]
                try:
                    answers.append(server.upload("/api/bg/remove", data, filename_for(data),
                                                 timeout_s=120)[0])
                except OSError as error:
                    answers.append(repr(error))

        with SlowClients(server.port, heads=50, uploads=10) as attack, \
                ThreadPoolExecutor(4) as clients:
            running = [clients.submit(client, offset) for offset in range(0, 12, 3)]
            while time.monotonic() < deadline:
                health_s.append(timed(lambda: server.json("/api/bg/health"))[1])
                time.sleep(0.5)
            for future in running:
                future.result()
        state = server.json("/api/bg/status")
        health_s.sort()
        print(f"beside 50 + 10 slow clients for {LOAD_S:.0f} s: {len(answers)} answers; "
              f"health median {health_s[len(health_s) // 2]:.2f} s, worst {health_s[-1]:.2f} s "
              f"(it waits for the request in hand); worker peak "
              f"{state['memory']['peak_rss_mb']} MB; {group.report()}; attackers: "
              f"{dict(attack.answers)}")
        assert answers and all(status in (200, 413) for status in answers), answers
        assert group.oom_kills == 0
        assert server.worker_pids() == workers and state["worker_starts"] == 1
