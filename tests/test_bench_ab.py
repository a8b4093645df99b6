"""`python -m bench ab` runs each variant from its own checkout, and compares what they answer."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from bench import ab, harness
from bench.__main__ import main as bench_main
from isnet_wsgi.image import png


def test_a_variant_is_started_in_its_checkout_with_its_own_config(tmp_path):
    name, checkout, env = ab.parse_variant(f"other@{tmp_path}:CACHE_MB=0,LD_PRELOAD=/x.so")
    assert (name, checkout, env) == ("other", tmp_path, {"CACHE_MB": "0", "LD_PRELOAD": "/x.so"})
    server = harness.service(Path("model.onnx"), tmp_path, env=env, checkout=checkout, label=name)
    assert server.cwd == checkout
    assert server.command[server.command.index("-c") + 1] == str(checkout / "gunicorn.conf.py")
    assert server.env["CACHE_MB"] == "0" and server.env["LD_PRELOAD"] == "/x.so"


def test_answers_are_compared_by_pixels_when_their_bytes_differ():
    image = Image.new("RGBA", (600, 500), (10, 20, 30, 255))
    one, other = png.encode(image, threads=1), png.encode(image, threads=2)
    assert one != other
    assert ab._compared({"a.png": {"x": one, "y": one}}) == "the same bytes from every variant"
    assert ab._compared({"a.png": {"x": one, "y": other}}) == (
        "the same pixels from every variant (other PNG bytes for a.png)")
    changed = png.encode(Image.new("RGBA", (600, 500), (10, 20, 31, 255)))
    assert ab._compared({"a.png": {"x": one, "y": changed}}) == "DIFFER for a.png"


def test_the_paired_ratio_compares_each_photo_with_itself():
    # Two photos, two rounds: the variant is 10% slower on every one of them,
    # while the photos themselves differ threefold.
    reference = [0.5, 1.5, 0.5, 1.5]
    variant = [0.55, 1.65, 0.55, 1.65]
    assert ab.paired_ratio(variant, reference) == pytest.approx(1.1)
    with pytest.raises(ValueError):
        ab.paired_ratio(variant, reference[:3])  # runs that do not pair up


def test_two_variants_of_one_name_are_refused_before_any_server_starts(monkeypatch):
    started = []
    monkeypatch.setattr(harness, "service", lambda *args, **kwargs: started.append(args))
    with pytest.raises(SystemExit):
        bench_main(["ab", "now", "now:CACHE_MB=0"])
    assert started == []
