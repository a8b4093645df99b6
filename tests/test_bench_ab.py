"""bench.ab runs each variant from its own checkout, not from this one."""

from __future__ import annotations

from pathlib import Path

from bench import ab


def test_a_variant_is_started_in_its_checkout_with_its_own_config(tmp_path):
    checkout = tmp_path / "other"
    checkout.mkdir()
    server = ab.service(checkout, Path("model.onnx"), {}, tmp_path)
    assert server.cwd == checkout
    assert server.command[server.command.index("-c") + 1] == str(checkout / "gunicorn.conf.py")
