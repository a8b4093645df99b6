"""Full-resolution answers from a real gunicorn, `make run`'s, with
MAX_DIMENSION=8192 and MAX_UPLOAD_MB=25 and nothing else changed.

A 25 MP photo's cut-out (streamed), its JPEG on a blurred background and
on a bg_file, and every small file that decodes huge: each answer a 200 at
the photo's size or a 413 naming its limit, and the worker's peak (VmHWM,
after all of them) within the budget the README states for any request.
"""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image

from bench.full_resolution import SIZES_BY_MEGAPIXELS, synthetic_photo
from isnet_wsgi.runtime import memory
from tests.helpers import open_image
from tests.system.server import running_gunicorn
from tests.system.test_decode_budget import (
    WORKER_PEAK_BUDGET_MB,
    assert_within_budget,
    filename_for,
    make_run_env,
    with_background,
)
from tests.test_image import SMALL_BUT_HUGE

FULL_RESOLUTION = {"MAX_DIMENSION": "8192", "MAX_UPLOAD_MB": "25"}


@pytest.fixture(scope="module", params=sorted(WORKER_PEAK_BUDGET_MB),
                ids=lambda arena_mb: f"arena-{arena_mb}MiB")
def full_resolution_server(request, tmp_path_factory):
    with running_gunicorn(tmp_path_factory.mktemp("full"), env=make_run_env(), CACHE_MB="0",
                          ORT_ARENA_MB=str(request.param), **FULL_RESOLUTION) as running:
        assert running.json("/api/bg/status")["memory"]["arena_mb"] == request.param
        yield running


@pytest.fixture(scope="module")
def photo_25mp() -> bytes:
    return synthetic_photo(SIZES_BY_MEGAPIXELS[25])


def test_25_mp_answers_keep_the_worker_within_its_budget(full_resolution_server, photo_25mp):
    server = full_resolution_server
    workers = server.worker_pids()
    status, headers, body = server.upload("/api/bg/remove", photo_25mp, "photo.jpg",
                                          timeout_s=120)
    assert status == 200 and headers["Transfer-Encoding"] == "chunked"
    assert open_image(body).size == SIZES_BY_MEGAPIXELS[25]
    status, _, body = server.upload("/api/bg/change_color", photo_25mp, "photo.jpg",
                                    {"blur": "20"}, timeout_s=120)
    assert status == 200 and open_image(body).size == SIZES_BY_MEGAPIXELS[25]
    background = synthetic_photo(SIZES_BY_MEGAPIXELS[12])
    form, content_type = with_background(photo_25mp, background)
    status, _, body = server.request("POST", "/api/bg/change_color", form,
                                     {"Content-Type": content_type}, timeout_s=120)
    assert status == 200 and open_image(body).format == "JPEG"
    for name, make in SMALL_BUT_HUGE.items():
        data = make()
        status, _, body = server.upload("/api/bg/remove", data, filename_for(data))
        assert_within_budget(status, body, name)
    peak_mb = memory.peak_rss_mb(workers[0])
    arena_mb = server.json("/api/bg/status")["memory"]["arena_mb"]
    print(f"worker peak after 25 MP answers, arena {arena_mb} MiB: {peak_mb} MB")
    assert peak_mb < WORKER_PEAK_BUDGET_MB[arena_mb]
    assert server.worker_pids() == workers


def test_over_the_pixel_limit_or_the_budget_is_a_413_naming_it(full_resolution_server):
    server = full_resolution_server
    over_pixels = Image.new("RGB", (6200, 4100), (90, 120, 200))  # 25.4 MP
    buffer = io.BytesIO()
    over_pixels.save(buffer, "JPEG")
    status, _, body = server.upload("/api/bg/remove", buffer.getvalue(), "big.jpg")
    assert status == 413 and json.loads(body)["error"] == "image_too_large"
    assert "the limit is 25000000 pixels" in json.loads(body)["message"]
    # A progressive JPEG keeps every coefficient whole: over the budget at 25 MP.
    progressive = synthetic_photo(SIZES_BY_MEGAPIXELS[25], progressive=True)
    status, _, body = server.upload("/api/bg/remove", progressive, filename_for(progressive))
    assert status == 413 and json.loads(body)["error"] == "decode_budget_exceeded"
    assert "the decode budget is 160 MB" in json.loads(body)["message"]
    status, _, body = server.upload("/api/bg/remove", synthetic_photo((3000, 2000)), "a.jpg",
                                    {"format": "webp"})
    assert status == 413 and json.loads(body)["error"] == "output_too_large"
