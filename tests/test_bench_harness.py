"""bench/harness.py: what the bench and the tests start the service with, and
how requests are built before the clock starts and timed in turn."""

from __future__ import annotations

import io
import json
import re
import subprocess
import urllib.parse
from pathlib import Path

import pytest

from bench import harness
from bench.rembg import Rembg
from isnet_wsgi.web.multipart import boundary_from_content_type, read_form

PHOTO = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40
MODEL = Path("model.onnx")


def _form(removal: harness.Removal):
    body = io.BytesIO(removal.body)
    return read_form(body.read, boundary_from_content_type(removal.content_type),
                     max_file_bytes=1 << 20)


# --- malloc.env, one definition -------------------------------------------------


def test_make_exports_malloc_env_to_what_it_runs():
    # An extra makefile after the project's: its recipe prints the environment
    # `make run` (and test, bench) would give gunicorn.
    printed = subprocess.run(
        ["make", "--no-print-directory", "-s", "-f", "Makefile", "-f", "-", "print-environment"],
        cwd=harness.ROOT, input="print-environment:\n\t@env\n", capture_output=True, text=True,
        timeout=30, check=True, env={"PATH": "/usr/bin:/bin"}).stdout
    seen = dict(line.split("=", 1) for line in printed.splitlines() if "=" in line)
    wanted = harness.malloc_env()
    assert {"MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES"} <= wanted.keys()
    assert {name: seen.get(name) for name in wanted} == wanted


def test_the_image_sets_malloc_env_as_make_run_does():
    dockerfile = (harness.ROOT / "Dockerfile").read_text()
    for name, value in harness.malloc_env().items():
        assert re.findall(rf"(?:^|\s){name}=(\S+)", dockerfile)[-1:] == [value], name


def test_a_line_that_is_not_name_equals_value_is_refused(tmp_path):
    (tmp_path / "malloc.env").write_text("# a comment\nMALLOC_ARENA_MAX=2\n\nGLIBC_TUNABLES 1\n")
    with pytest.raises(ValueError, match=r"malloc.env:4: not NAME=VALUE"):
        harness.malloc_env(tmp_path / "malloc.env")


def test_the_service_gets_malloc_env_and_the_settings_on_top():
    env = harness.service_env({"API_KEY": "secret", "PATH": "/bin", "MALLOC_MMAP_THRESHOLD_": "1"},
                              CACHE_MB="0")
    assert "API_KEY" not in env
    assert env["PATH"] == "/bin" and env["CACHE_MB"] == "0"
    assert {name: env[name] for name in harness.malloc_env()} == harness.malloc_env()
    assert harness.service_env({}, MALLOC_MMAP_THRESHOLD_="0")["MALLOC_MMAP_THRESHOLD_"] == "0"


# --- Requests built before the clock starts --------------------------------------


def test_our_removal_posts_the_photo_as_the_file_field(tmp_path):
    removal = harness.service(MODEL, tmp_path).removal("coffee.png", PHOTO)
    assert removal.path == "/api/bg/remove"
    [upload] = _form(removal).files["file"]
    assert (upload.filename, upload.data) == ("coffee.png", PHOTO)


def test_rembgs_removal_names_its_model_file(tmp_path):
    server = Rembg.create(tmp_path / "isnet.onnx", tmp_path)
    removal = server.removal("coffee.png", PHOTO)
    path, _, query = removal.path.partition("?")
    assert path == "/api/remove"
    extras = json.loads(urllib.parse.parse_qs(query)["extras"][0])
    assert extras == {"model_path": str(tmp_path / "isnet.onnx")}
    form = _form(removal)
    assert form.fields["model"] == ["dis_custom"]
    assert form.files["file"][0].data == PHOTO
    assert not [name for name in server.env if name.startswith("MALLOC_")]


def test_a_prepared_removal_is_sent_as_built(tmp_path, monkeypatch):
    server = harness.service(MODEL, tmp_path)
    removal = server.removal("coffee.png", PHOTO)
    sent = []

    def request(method, path, body=None, headers=None, timeout_s=0):
        sent.append((method, path, body, headers))
        return 200, {}, b"answer"

    monkeypatch.setattr(server, "request", request)
    assert server.send(removal) == b"answer"
    assert sent == [("POST", "/api/bg/remove", removal.body,
                     {"Content-Type": removal.content_type})]


def test_an_answer_other_than_200_stops_the_bench(tmp_path, monkeypatch):
    server = harness.service(MODEL, tmp_path)
    monkeypatch.setattr(server, "request", lambda *args, **kwargs: (415, {}, b'{"error": "x"}'))
    with pytest.raises(RuntimeError, match="isnet-wsgi answered 415"):
        server.send(server.removal("coffee.png", PHOTO))


# --- Timing in turn ----------------------------------------------------------------


def test_interleave_rotates_who_goes_first_and_keeps_what_each_answered():
    order = []

    def step(label: str, answer):
        return harness.Step(label, lambda name, data: (label, name),
                            lambda sent: order.append(sent) or answer)

    timings = harness.interleave([step("a", b"A"), step("b", b"B"), step("bare", 0.25)],
                                 [("one.png", b""), ("two.png", b"")], rounds=2)
    assert order[:6] == [("a", "one.png"), ("b", "one.png"), ("bare", "one.png"),
                         ("b", "two.png"), ("bare", "two.png"), ("a", "two.png")]
    assert order[6:9] == [("b", "one.png"), ("bare", "one.png"), ("a", "one.png")]
    assert {label: len(values) for label, values in timings.seconds.items()} == {
        "a": 4, "b": 4, "bare": 4}
    assert timings.seconds["bare"] == [0.25] * 4  # the child's own timing, not the pipe's
    assert timings.answers["two.png"] == {"a": b"A", "b": b"B"}
