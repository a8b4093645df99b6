"""The service as `make run` starts it, inside a 256 and a 512 MiB memory cgroup, under load.

Four clients send a mix of full-size work and the small files that decode
huge (tests/test_image.py) for LOAD_SECONDS: every answer must be 200 or
413, the kernel must OOM-kill nothing, and the one worker must serve it all
(same pid, never restarted). Needs root and a memory cgroup it may create a
child of (v1 memory.limit_in_bytes or v2 memory.max), as in a container
with a memory limit. With its default onnxruntime arena (ORT_ARENA_MB), the
service keeps none in 256 MiB and keeps it in 512 MiB
(ARENA_MIN_MEMORY_MB), where a large upload's decode comes on top of it.

At full resolution (MAX_DIMENSION=8192, MAX_UPLOAD_MB=25), four clients
send 12-25 MP phone-sized photos to both endpoints in 512 MiB: the same rules.
"""

from __future__ import annotations

import os
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from PIL import Image

from bench.full_resolution import SIZES_BY_MEGAPIXELS, synthetic_photo
from tests.helpers import encode_image, open_image, photo_bytes
from tests.system import cgroups
from tests.system.server import running_gunicorn
from tests.system.test_decode_budget import (
    filename_for,
    large_photo_jpeg,
    largest_accepted_webp,
    make_run_env,
)
from tests.test_image import SMALL_BUT_HUGE

# The default arena, and each container limit tested, MiB -> the arena the
# service must keep in it.
ARENA_MB = 192
ARENA_BY_LIMIT_MIB = {256: 0, 512: ARENA_MB}
CLIENTS = 4
LOAD_SECONDS = float(os.environ.get("LOAD_SECONDS", "30"))


class MemoryCgroup:
    """A child of this process's memory cgroup with a limit; removed by ``remove``."""

    def __init__(self, path: Path, version: int, limit_bytes: int):
        self.path = path
        self.version = version
        self.limit_mib = limit_bytes / 2**20

    @classmethod
    def create(cls, limit_bytes: int) -> "MemoryCgroup":
        path, version = cgroups.make_child("memory", f"isnet-test-{os.getpid()}")
        group = cls(path, version, limit_bytes)
        if version == 1:
            (path / "memory.limit_in_bytes").write_text(str(limit_bytes))
        else:
            (path / "memory.max").write_text(str(limit_bytes))
            (path / "memory.swap.max").write_text("0")
        return group

    def _counters(self, file_name: str) -> dict[str, int]:
        pairs = (line.split() for line in (self.path / file_name).read_text().splitlines())
        return {key: int(value) for key, value in pairs}

    @property
    def oom_kills(self) -> int:
        return self._counters("memory.oom_control" if self.version == 1
                              else "memory.events").get("oom_kill", 0)

    def report(self) -> str:
        if self.version == 1:
            peak = int((self.path / "memory.max_usage_in_bytes").read_text())
            failcnt = int((self.path / "memory.failcnt").read_text())
            return f"group peak {peak / 2**20:.1f} MiB, failcnt {failcnt} (limit hits, reclaimed)"
        events = self._counters("memory.events")
        return f"memory.events max {events.get('max', 0)}, high {events.get('high', 0)}"

    def remove(self) -> None:
        cgroups.remove(self.path)


@contextmanager
def memory_cgroup(limit_mib: int):
    try:
        group = MemoryCgroup.create(limit_mib * 2**20)
    except (OSError, StopIteration) as error:
        pytest.fail(f"this test needs root and a memory cgroup it may create a child of "
                    f"(cgroup v1 or v2): {error!r}")
    try:
        yield group
    finally:
        group.remove()


@pytest.fixture(params=sorted(ARENA_BY_LIMIT_MIB), ids=lambda limit: f"{limit}MiB")
def limited_cgroup(request):
    with memory_cgroup(request.param) as group:
        yield group


def workload() -> list[tuple[str, bytes]]:
    """Full-size work and the small files that decode huge, interleaved."""
    photo_1024 = open_image(photo_bytes("astronaut.png")).resize((1024, 1024), Image.LANCZOS)
    work = [("astronaut.png", photo_bytes("astronaut.png")),
            ("photo-1024.png", encode_image(photo_1024, "PNG")),
            ("hubble_deep_field.jpg", photo_bytes("hubble_deep_field.jpg")),
            ("large.jpg", large_photo_jpeg())]
    attacks = [(name, make()) for name, make in SMALL_BUT_HUGE.items()]
    attacks.append(("largest accepted webp", largest_accepted_webp()))
    return [case for pair in zip(work * 2, attacks) for case in pair]


def test_four_clients_in_a_small_cgroup_cause_no_oom_kill(tmp_path, limited_cgroup):
    _four_clients_cause_no_oom_kill(tmp_path, limited_cgroup, workload(), ["/api/bg/remove"])


def full_resolution_workload() -> list[tuple[str, bytes]]:
    """Phone-sized JPEGs, 12 to 25 MP, made from a CC0 photo with texture."""
    return [(f"{megapixels} MP.jpg", synthetic_photo(SIZES_BY_MEGAPIXELS[megapixels]))
            for megapixels in (12, 20, 25)]


def test_four_clients_sending_12_to_25_mp_photos_at_full_resolution_cause_no_oom_kill(
        tmp_path):
    with memory_cgroup(512) as group:
        _four_clients_cause_no_oom_kill(
            tmp_path, group, full_resolution_workload(),
            ["/api/bg/remove", "/api/bg/change_color"], MAX_DIMENSION="8192",
            MAX_UPLOAD_MB="25")


def _four_clients_cause_no_oom_kill(tmp_path, group: MemoryCgroup,
                                    cases: list[tuple[str, bytes]], paths: list[str],
                                    **settings: str) -> None:
    """CLIENTS clients send ``cases`` in turn, to each of ``paths`` in turn,
    for LOAD_SECONDS: every answer 200 or 413, no OOM kill, one worker throughout."""
    # The master and every worker it forks are inside before the first allocation.
    with running_gunicorn(tmp_path, command_prefix=cgroups.enter_command(group.path),
                          env=make_run_env(), CACHE_MB="0", **settings) as server:
        state = server.json("/api/bg/status")
        assert state["memory"]["cgroup_limit_mb"] == group.limit_mib
        assert state["memory"]["arena_mb"] == ARENA_BY_LIMIT_MIB[round(group.limit_mib)]
        workers = server.worker_pids()
        answers: list[tuple[str, int | str]] = []
        deadline = time.monotonic() + LOAD_SECONDS

        def client(offset: int) -> None:
            turn = offset
            while time.monotonic() < deadline:
                name, data = cases[turn % len(cases)]
                path = paths[turn % len(paths)]
                turn += 1
                try:
                    status, _, _ = server.upload(path, data, filename_for(data), timeout_s=120)
                except OSError as error:
                    status = repr(error)
                answers.append((name, status))

        threads = [threading.Thread(target=client, args=(i * 3,)) for i in range(CLIENTS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        final = server.json("/api/bg/status")
        print(f"{len(answers)} answers in {LOAD_SECONDS:.0f} s: "
              f"{sum(status == 200 for _, status in answers)} x 200, "
              f"{sum(status == 413 for _, status in answers)} x 413; worker peak "
              f"{final['memory']['peak_rss_mb']} MB; {group.report()}")
        unexpected = [(name, status) for name, status in answers if status not in (200, 413)]
        assert not unexpected
        assert group.oom_kills == 0
        assert server.worker_pids() == workers and final["worker_starts"] == 1
        assert sum(status == 200 for _, status in answers) >= CLIENTS
