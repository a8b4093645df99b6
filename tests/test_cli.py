"""`python -m isnet_wsgi remove`: files and folders, options, failures, exit codes."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import numpy as np

from isnet_wsgi import cli
from tests.helpers import encode_image, open_image, photo_bytes
from tests.test_api import remove

# The command reads its settings from the environment, as the server does;
# only MODEL_PATH may come from the shell running the tests (see helpers.py).
CLI_ENV = {"MODEL_PATH": os.environ.get("MODEL_PATH", ""), "ORT_DISABLE_TELEMETRY": "1"}


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "isnet_wsgi", *args], capture_output=True,
                          text=True, timeout=300,
                          env={"PATH": os.environ.get("PATH", ""), **CLI_ENV})


def small_photo(name: str, side_px: int = 96) -> bytes:
    return encode_image(open_image(photo_bytes(name)).resize((side_px, side_px)), "PNG")


def test_a_folder_with_a_bad_file_and_a_missing_input_exits_1_with_a_summary(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "astronaut.png").write_bytes(small_photo("astronaut.png"))
    (folder / "camera.png").write_bytes(small_photo("camera.png"))
    (folder / "notes.txt").write_text("not an image: skipped, not an allowed extension")
    (folder / "broken.png").write_bytes(b"not an image")
    result = run_cli("remove", str(folder), str(tmp_path / "absent.jpg"),
                     "-o", str(tmp_path / "out"), "--mask")
    assert result.returncode == 1, result.stderr
    assert "2 written, 2 failed" in result.stdout
    assert "broken.png: The file is not an image" in result.stdout
    assert "absent.jpg" in result.stdout
    assert "] 3/4 camera.png" in result.stderr and "#" * cli.PROGRESS_BAR_WIDTH in result.stderr
    masks = sorted(path.name for path in (tmp_path / "out").iterdir())
    assert masks == ["mask_astronaut.png", "mask_camera.png"]
    mask = open_image((tmp_path / "out" / "mask_astronaut.png").read_bytes())
    assert mask.mode == "L" and mask.size == (96, 96)


def test_one_file_to_a_named_output_matches_what_the_api_answers(tmp_path, client):
    data = small_photo("coffee.png", 120)
    source = tmp_path / "coffee.png"
    source.write_bytes(data)
    target = tmp_path / "cut.webp"
    # NOTE: a subprocess, so its model session does not swell the test process
    # (whose RSS the service's memory guard and health check read).
    result = run_cli("remove", str(source), "-o", str(target), "--format", "webp", "--crop",
                     "--margin", "4", "--max-dimension", "100", "--refine", "true")
    assert result.returncode == 0 and result.stdout == "1 written, 0 failed\n"
    assert result.stderr == ""  # no progress bar for a single file
    from_cli = open_image(target.read_bytes())
    from_api = open_image(remove(client, data, "coffee.png", params={
        "format": "webp", "crop": "true", "margin": "4", "max_dimension": "100",
        "refine": "true"}).body)
    assert from_cli.format == "WEBP" and from_cli.mode == "RGBA"
    assert from_cli.size == from_api.size and max(from_cli.size) <= 100
    difference = np.abs(np.asarray(from_cli, dtype=int) - np.asarray(from_api, dtype=int))
    assert difference.max() <= 1


def test_a_bad_option_exits_2_before_loading_the_model(tmp_path, monkeypatch):
    monkeypatch.setenv("MODEL_PATH", str(tmp_path / "absent.onnx"))
    stderr = io.StringIO()
    code = cli.main(["remove", "x.png", "-o", str(tmp_path), "--margin", "3"], stderr=stderr)
    assert code == 2
    assert stderr.getvalue() == "error: margin applies only with crop=true.\n"
    assert cli.main(["remove", "x.png", "-o", str(tmp_path), "--format", "bmp"],
                    stderr=io.StringIO()) == 2
    assert os.listdir(tmp_path) == []


def test_color_puts_the_subject_on_the_colour_as_the_api_does(tmp_path, client):
    data = small_photo("camera.png", 128)
    source = tmp_path / "camera.png"
    source.write_bytes(data)
    result = run_cli("color", str(source), "-o", str(tmp_path / "out"), "--color", "0,255,0",
                     "--format", "png")
    assert result.returncode == 0, result.stderr
    written = open_image((tmp_path / "out" / "color_camera.png").read_bytes())
    answered = open_image(client.post("/api/bg/change_color", {"color": "0,255,0",
                                                               "format": "png"},
                                      upload_files=[("file", "camera.png", data)]).body)
    assert written.mode == "RGB" and written.size == (128, 128)
    assert np.array_equal(np.asarray(written), np.asarray(answered))


def test_color_refuses_two_backgrounds_and_a_bad_background_before_loading(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not an image")
    both = run_cli("color", "in.png", "-o", str(tmp_path), "--color", "#fff", "--blur", "4")
    assert both.returncode == 2 and "Send one background" in both.stderr
    bad = run_cli("color", "in.png", "-o", str(tmp_path), "--background", str(tmp_path / "bad.png"))
    assert bad.returncode == 2 and "not an image" in bad.stderr


# --- Mistakes answered with a sentence a user can act on (issue 30) ------------

def test_an_output_name_of_another_format_is_refused_before_loading(tmp_path):
    (tmp_path / "in.png").write_bytes(small_photo("camera.png"))
    result = run_cli("remove", str(tmp_path / "in.png"), "-o", str(tmp_path / "x.jpg"))
    assert result.returncode == 2
    assert "x.jpg names a .jpg file, but the result is PNG" in result.stderr
    assert not (tmp_path / "x.jpg").exists()


def test_an_empty_folder_says_no_images_found(tmp_path):
    (tmp_path / "empty").mkdir()
    result = run_cli("remove", str(tmp_path / "empty"), "-o", str(tmp_path / "out"))
    assert result.returncode == 1 and "no images found in" in result.stderr


def test_a_missing_file_is_a_sentence_not_an_errno(tmp_path):
    result = run_cli("color", str(tmp_path / "in.png"), "-o", str(tmp_path),
                     "--background", str(tmp_path / "beach.jpg"))
    assert result.returncode == 2
    assert "beach.jpg: no such file or folder" in result.stderr and "Errno" not in result.stderr


def test_a_negative_setting_says_it_is_out_of_range(tmp_path):
    result = subprocess.run([sys.executable, "-m", "isnet_wsgi", "remove", "in.png", "-o",
                             str(tmp_path)], capture_output=True, text=True, timeout=60,
                            env={"PATH": os.environ.get("PATH", ""), **CLI_ENV, "CACHE_MB": "-1"})
    assert result.returncode == 2
    assert "CACHE_MB='-1' is out of range [0, " in result.stderr
    assert "not a number" not in result.stderr
