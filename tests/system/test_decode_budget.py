"""Small files that decode huge, sent to a real gunicorn started as `make run` starts it.

Whatever an upload claims, the worker's peak stays within the budget the
README states: each answer is a 200 or a 413 decode_budget_exceeded, and
VmHWM, read from /proc after all of them, is under WORKER_PEAK_BUDGET_MB.
"""

from __future__ import annotations

import json
import uuid

import pytest
from PIL import Image

from isnet_wsgi.runtime import memory
from tests.helpers import encode_image, open_image, photo_bytes
from tests.system.server import running_gunicorn, server_env
from tests.test_image import SMALL_BUT_HUGE

# README, "Memory and speed": the worker's peak for any accepted request,
# by the arena onnxruntime keeps between requests (ORT_ARENA_MB; 0 is none):
# a decode comes on top of what the arena holds (~100 MB). Measured 265 and
# 362 MB.
WORKER_PEAK_BUDGET_MB = {0: 300, 192: 400}

_EXTENSION_BY_MAGIC = {b"RIFF": "webp", b"\x89PNG": "png", b"II*\0": "tiff", b"MM\0*": "tiff",
                       b"\xff\xd8\xff": "jpg"}


def make_run_env() -> dict:
    """The environment `make run` gives gunicorn: malloc.env's exports
    (server_env reads it; tests/test_bench_harness.py checks make exports it)."""
    return server_env()


def filename_for(data: bytes) -> str:
    extension = next(ext for magic, ext in _EXTENSION_BY_MAGIC.items() if data.startswith(magic))
    return f"upload.{extension}"


def large_photo_jpeg() -> bytes:
    """A real photo at 5000x4360 px (2-3 MB): full-size work, decoded reduced."""
    photo = open_image(photo_bytes("hubble_deep_field.jpg")).convert("RGB")
    return encode_image(photo.resize((5000, 4360), Image.Resampling.BICUBIC), "JPEG", quality=85)


def largest_accepted_webp() -> bytes:
    """A 400-byte WebP whose estimate (159 MB) is just under the default budget."""
    return encode_image(Image.new("RGBA", (2950, 2950), (10, 200, 30, 128)), "WEBP",
                        lossless=True)


def with_background(data: bytes, background: bytes) -> tuple[bytes, str]:
    """A change_color form: the photo as ``file``, ``background`` as ``bg_file``."""
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
             f'filename="{filename_for(body)}"\r\n'
             "Content-Type: application/octet-stream\r\n\r\n".encode() + body + b"\r\n"
             for name, body in (("file", data), ("bg_file", background))]
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), \
        f"multipart/form-data; boundary={boundary}"


def assert_within_budget(status: int, body: bytes, what: str) -> None:
    assert status in (200, 413), f"{what}: {status} {body[:300]!r}"
    if status == 413:
        error = json.loads(body)
        assert error["error"] == "decode_budget_exceeded", f"{what}: {error}"
        assert "decode budget is 160 MB" in error["message"]


@pytest.fixture(scope="module", params=sorted(WORKER_PEAK_BUDGET_MB),
                ids=lambda arena_mb: f"arena-{arena_mb}MiB")
def make_run_server(request, tmp_path_factory):
    # No result cache: every request is decoded and run, none answered from memory.
    with running_gunicorn(tmp_path_factory.mktemp("budget"), env=make_run_env(),
                          CACHE_MB="0", ORT_ARENA_MB=str(request.param)) as running:
        assert running.json("/api/bg/status")["memory"]["arena_mb"] == request.param
        yield running


def test_small_files_that_decode_huge_keep_the_worker_within_its_budget(make_run_server):
    server = make_run_server
    workers = server.worker_pids()
    status, _, _ = server.upload("/api/bg/remove", large_photo_jpeg(), "large.jpg")
    assert status == 200
    normal_peak_mb = memory.peak_rss_mb(workers[0])
    answers = {}
    cases = {**SMALL_BUT_HUGE, "2950x2950 RGBA WebP, just under the budget": largest_accepted_webp}
    for name, make in cases.items():
        data = make()
        status, _, body = server.upload("/api/bg/remove", data, filename_for(data))
        assert_within_budget(status, body, name)
        answers[name] = status
        body, content_type = with_background(photo_bytes("astronaut.png"), data)
        status, _, answer = server.request("POST", "/api/bg/change_color", body,
                                           {"Content-Type": content_type})
        assert_within_budget(status, answer, f"{name} as bg_file")
    assert answers["2950x2950 RGBA WebP, just under the budget"] == 200
    peak_mb = memory.peak_rss_mb(workers[0])
    print(f"worker peak: {normal_peak_mb} MB after a 5000x4360 JPEG, {peak_mb} MB after "
          f"the small-but-huge files {answers}")
    arena_mb = server.json("/api/bg/status")["memory"]["arena_mb"]
    assert peak_mb < WORKER_PEAK_BUDGET_MB[arena_mb]
    # Nothing crashed or recycled the worker, and it still serves.
    assert server.worker_pids() == workers
    assert server.json("/api/bg/status")["worker_starts"] == 1
    status, _, _ = server.upload("/api/bg/remove", photo_bytes("coffee.png"), "coffee.png")
    assert status == 200


def test_status_shows_the_budget(make_run_server):
    assert make_run_server.json("/api/bg/status")["settings"]["decode_budget_mb"] == 160
