"""`python -m bench slow-clients`: what a normal client waits while slow clients hold connections.

For each count N of slow connections the service is started afresh (as `make
run` does, on loopback), N connections drip their headers (slowloris: a byte
every 0.1 s, never the blank line) and N/5 drip an upload (8 MB declared,
~1 KiB/s), each reconnecting as soon as the service answers or drops it, as
an attacker's script would. Meanwhile a normal client asks for
/api/bg/health and removes the background of a photo, in turn, ROUNDS
times. The table gives the medians and the worst, the worker's peak RSS
(VmHWM), what the attackers were answered, and whether the service is
normal once they stop.

Self-contained (standard library and the project's own package); `run()`
is the section's entry point, `SlowClients` the attack, which
tests/system/test_slow_clients.py also uses.
"""

from __future__ import annotations

import argparse
import collections
import json
import select
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path

from bench import harness
from isnet_wsgi.runtime import memory

HOST = harness.HOST
PHOTO = harness.ROOT.parent / "shared" / "photos" / "astronaut.png"
HELP = "the latency a normal client sees under 0, 10, 50 and 200 slow connections"
MIB = 1024 * 1024
TICK_S = 0.1
HEAD_DRIP = b"GET /api/bg/health HTTP/1.1\r\nHost: x\r\nX-Slow: "
UPLOAD_DRIP_BYTES = 102  # a tick's worth at ~1 KiB/s


class SlowClients:
    """``heads`` connections dripping their headers and ``uploads`` dripping an
    upload body, each replaced as soon as the server answers or drops it;
    one thread drips them all. Every socket is closed on exit."""

    def __init__(self, port: int, *, heads: int, uploads: int, declared_bytes: int = 8 * MIB):
        self.port = port
        self.kinds = ["head"] * heads + ["upload"] * uploads
        self.upload_head = (b"POST /api/bg/remove HTTP/1.1\r\nHost: x\r\n"
                            b"Content-Type: image/png\r\nContent-Length: %d\r\n\r\n"
                            % declared_bytes)
        self.answers: collections.Counter[str] = collections.Counter()
        self._connections: dict[socket.socket, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._drip, daemon=True)

    def __enter__(self) -> "SlowClients":
        try:
            for kind in self.kinds:
                self._open(kind)
            self._thread.start()
        except BaseException:
            self._close_all()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        self._close_all()

    def _open(self, kind: str) -> None:
        try:
            sock = socket.create_connection((HOST, self.port), timeout=2)
        except OSError:
            self.answers["not connected"] += 1
            return
        sock.setblocking(False)
        self._connections[sock] = kind
        self._send(sock, HEAD_DRIP if kind == "head" else self.upload_head)

    def _send(self, sock: socket.socket, data: bytes) -> None:
        try:
            sock.send(data)
        except OSError:
            pass  # a full buffer or a closed connection: the reader sees which

    def _drip(self) -> None:
        while not self._stop.wait(TICK_S):
            for sock in _answered(list(self._connections)):
                self.answers[_status_of(sock)] += 1
                del self._connections[sock]
                sock.close()
            for sock, kind in list(self._connections.items()):
                self._send(sock, b"a" if kind == "head" else b"x" * UPLOAD_DRIP_BYTES)
            missing = collections.Counter(self.kinds)
            missing.subtract(self._connections.values())
            for kind, count in missing.items():
                for _ in range(count):
                    self._open(kind)  # answered, dropped or refused: again

    def _close_all(self) -> None:
        for sock in list(self._connections):
            sock.close()
        self._connections.clear()


def _answered(sockets: list[socket.socket]) -> list[socket.socket]:
    """Those with something to read: an answer, or the end of the connection."""
    poller = select.poll()  # NOTE: select.select stops at file descriptor 1024
    by_fd = {sock.fileno(): sock for sock in sockets}
    for fd in by_fd:
        poller.register(fd, select.POLLIN)
    return [by_fd[fd] for fd, _ in poller.poll(0)]


def _status_of(sock: socket.socket) -> str:
    try:
        first = sock.recv(4096).split(b"\r\n", 1)[0].split()
    except OSError:
        return "reset"
    return first[1].decode("ascii", "replace") if len(first) > 1 else "closed"


# --- The service -------------------------------------------------------------------

def start_service(model: Path, log_dir: Path, env: dict[str, str],
                  worker_class: str | None = None) -> harness.Server:
    """The service as `make run` starts it; ``worker_class`` replaces the
    worker (gunicorn reads GUNICORN_CMD_ARGS after its config file)."""
    if worker_class:
        env = {**env, "GUNICORN_CMD_ARGS": f"--worker-class={worker_class}"}
    server = harness.service(model, log_dir, env=env)
    try:
        server.start()
    except BaseException:
        server.stop()
        raise
    return server


class NormalClient:
    """A well-behaved client: a health probe and a removal, timed."""

    def __init__(self, server: harness.Server, photo: Path = PHOTO):
        self.server = server
        self.body, self.content_type = harness.multipart_body(photo.read_bytes(), photo.name)

    def health_s(self) -> tuple[float, int]:
        started = time.perf_counter()
        status = self.server.request("GET", "/api/bg/health")[0]
        return time.perf_counter() - started, status

    def removal_s(self) -> tuple[float, int]:
        started = time.perf_counter()
        status = self.server.request("POST", "/api/bg/remove", self.body,
                                     {"Content-Type": self.content_type})[0]
        return time.perf_counter() - started, status

    def worker_peak_mb(self) -> float:
        status = json.loads(self.server.request("GET", "/api/bg/status")[2])
        return memory.peak_rss_mb(status["worker_pid"])


# --- The section ---------------------------------------------------------------------

def measure(slow: int, rounds: int, model: Path, log_dir: Path, env: dict[str, str],
            worker_class: str | None = None) -> dict:
    """One fresh service under ``slow`` slowloris connections and slow/5 slow uploads."""
    server = start_service(model, log_dir, env, worker_class)
    try:
        client = NormalClient(server)
        client.removal_s()  # the first inference pays for the session's warm-up
        health, removal, statuses = [], [], collections.Counter()
        with SlowClients(server.port, heads=slow, uploads=slow // 5) as attack:
            time.sleep(2.0)  # the attack established, some connections past their grace
            for _ in range(rounds):
                for timings, (spent_s, status) in ((health, client.health_s()),
                                                   (removal, client.removal_s())):
                    timings.append(spent_s)
                    statuses[status] += 1
                time.sleep(0.5)
        after = (client.health_s()[1], client.removal_s()[1])
        return {"slow": slow, "uploads": slow // 5, "health": health, "removal": removal,
                "statuses": statuses, "attack": attack.answers, "after": after,
                "peak_mb": client.worker_peak_mb()}
    finally:
        server.stop()


def flood(clients: int, body_mb: float, model: Path, log_dir: Path, env: dict[str, str]) -> str:
    """``clients`` connections that each send a ``body_mb`` upload as fast as
    loopback allows, all at once: what the bodies read ahead cost the worker
    (WAITING_BODIES_MB bounds them), and a health probe sent meanwhile."""
    server = start_service(model, log_dir, env)
    try:
        client = NormalClient(server)
        client.removal_s()
        before_mb = client.worker_peak_mb()
        body = b"\x89PNG\r\n\x1a\n" + b"x" * int(body_mb * MIB)  # refused once read: 400
        head = (b"POST /api/bg/remove HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                b"Content-Length: %d\r\n\r\n" % len(body))
        statuses: collections.Counter[str] = collections.Counter()

        def send() -> None:
            try:
                with socket.create_connection((HOST, server.port), timeout=120) as sock:
                    sock.sendall(head + body)
                    statuses[_status_of(sock)] += 1
            except OSError as error:
                statuses[type(error).__name__] += 1
        threads = [threading.Thread(target=send) for _ in range(clients)]
        for thread in threads:
            thread.start()
        time.sleep(1.0)
        health_s, status = client.health_s()
        for thread in threads:
            thread.join()
        after_mb = client.worker_peak_mb()
    finally:
        server.stop()
    return (f"{clients} clients each sending {body_mb:g} MB at once: worker peak "
            f"{before_mb:.0f} MB before, {after_mb:.0f} MB after; answers "
            f"{_counts(statuses)}; /api/bg/health sent 1 s in: {status} in {health_s:.2f} s.")


def compare_well_behaved(worker_class: str, rounds: int, model: Path, log_dir: Path,
                         env: dict[str, str]) -> str:
    """This worker beside ``worker_class`` (the one before, say), both running,
    requests alternated (the order rotated each round): one client's removal
    latency, and the throughput of 4 clients at once, with no slow client."""
    services: dict[str, NormalClient] = {}
    try:
        for label, chosen in (("this worker", None), (worker_class, worker_class)):
            services[label] = NormalClient(start_service(model, log_dir, env, chosen))
        latency = {label: [] for label in services}
        throughput = {label: [] for label in services}
        for client in services.values():
            client.removal_s()  # warm-up
        for round_index in range(rounds):
            labels = list(services)[round_index % 2:] + list(services)[:round_index % 2]
            for label in labels:
                latency[label].append(services[label].removal_s()[0])
            for label in labels:
                throughput[label].append(_four_clients_per_s(services[label]))
    finally:
        for client in services.values():
            client.server.stop()
    first, second = services
    paired = [a / b for a, b in zip(latency[first], latency[second], strict=True)]
    lines = ["| worker | one client: median removal, s | 4 clients: median removals/s |",
             "|---|---|---|"]
    for label in services:
        lines.append(f"| {label} | {statistics.median(latency[label]):.3f} | "
                     f"{statistics.median(throughput[label]):.2f} |")
    lines.append(f"\nOne client, {first} / {second}: median of paired ratios "
                 f"{statistics.median(paired):.3f}; 4 clients, ratio of medians "
                 f"{statistics.median(throughput[first]) / statistics.median(throughput[second]):.3f}"
                 f" ({rounds} rounds).")
    return "\n".join(lines)


def _four_clients_per_s(client: NormalClient, clients: int = 4, each: int = 2) -> float:
    statuses = []

    def work():
        statuses.extend(client.removal_s()[1] for _ in range(each))
    threads = [threading.Thread(target=work) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if statuses != [200] * clients * each:
        raise RuntimeError(f"4 clients were answered {statuses}")
    return clients * each / (time.perf_counter() - started)


def table(results: list[dict]) -> str:
    lines = [("| slow connections + slow uploads | health median / worst, s | "
              "removal median / worst, s | normal client's statuses | attackers answered | "
              "worker peak, MB | afterwards |"),
             "|---|---|---|---|---|---|---|"]
    for result in results:
        def pair(values):
            return f"{statistics.median(values):.2f} / {max(values):.2f}"
        lines.append(
            f"| {result['slow']} + {result['uploads']} | {pair(result['health'])} | "
            f"{pair(result['removal'])} | {_counts(result['statuses'])} | "
            f"{_counts(result['attack']) or '-'} | {result['peak_mb']:.0f} | "
            f"{'normal' if result['after'] == (200, 200) else result['after']} |")
    return "\n".join(lines)


def _counts(counter: collections.Counter) -> str:
    return ", ".join(f"{key}: {count}" for key, count in sorted(counter.items(), key=str))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--slow", default="0,10,50,200",
                        help="counts of slowloris connections, comma-separated (uploads: 1/5)")
    parser.add_argument("--rounds", type=int, default=10,
                        help="health probes and removals timed per count")
    parser.add_argument("--worker-class", default=None,
                        help="the attack against another gunicorn worker class (gunicorn's -k)")
    parser.add_argument("--flood", type=int, default=50, metavar="N",
                        help="first, N clients each sending 7.5 MB at full speed at once "
                             "(0: none)")
    parser.add_argument("--compare-with", default=None, metavar="WORKER_CLASS",
                        help="first, well-behaved clients only: this worker beside that one, "
                             "requests alternated")


def run(args: argparse.Namespace) -> int:
    counts = [int(count) for count in str(args.slow).split(",") if count]
    results = []
    with tempfile.TemporaryDirectory(prefix="slow-clients-") as log_dir:
        # NOTE: the result cache would answer a repeated photo without inference.
        env = {"CACHE_MB": "0"}
        if args.flood:
            print(flood(args.flood, 7.5, args.model, Path(log_dir), env))
        if args.compare_with:
            print(compare_well_behaved(args.compare_with, args.rounds, args.model,
                                       Path(log_dir), env))
        results = [measure(count, args.rounds, args.model, Path(log_dir), env,
                           args.worker_class) for count in counts]
    if results:
        print(table(results))
    return 0
