"""Settings come from the environment and are validated once."""

from pathlib import Path

import pytest

from isnet_wsgi.config import ConfigError, Settings


def test_defaults_match_the_documented_limits():
    settings = Settings.from_env({})
    assert settings.port == 5000
    assert settings.max_upload_bytes == 8 * 1024 * 1024
    assert settings.max_dimension_px == 1024
    assert settings.request_timeout_s == 60
    assert settings.allowed_extensions == ("png", "jpg", "jpeg", "gif", "bmp", "tiff", "webp")
    assert settings.model_path.name == "isnet-general-tiny.onnx"
    assert settings.manifest_path.name == "isnet-general-tiny.json"
    assert settings.api_key is None


def test_values_are_read_and_typed():
    settings = Settings.from_env({
        "PORT": "8080", "MAX_UPLOAD_MB": "2.5", "ALLOWED_EXTENSIONS": "PNG, .jpg",
        "ORT_CPU_ARENA": "yes", "API_KEY": "k", "MODEL_PATH": "/m/x.onnx"})
    assert settings.port == 8080
    assert settings.max_upload_bytes == int(2.5 * 1024 * 1024)
    assert settings.allowed_extensions == ("png", "jpg")
    assert settings.ort_cpu_arena is True
    assert settings.model_path == Path("/m/x.onnx")
    assert settings.public()["api_key"] == "set"


@pytest.mark.parametrize("name, value", [
    ("PORT", "0"), ("PORT", "http"), ("MAX_UPLOAD_MB", "nan"), ("MAX_UPLOAD_MB", "-1"),
    ("ORT_CPU_ARENA", "maybe"), ("ALLOWED_EXTENSIONS", " , "), ("MAX_DIMENSION", "1e9")])
def test_bad_values_stop_start_up_with_the_setting_named(name, value):
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: value})


def test_the_api_key_is_never_shown():
    settings = Settings.from_env({"API_KEY": "s3cret"})
    assert "s3cret" not in repr(settings.public())
    assert "s3cret" not in repr(settings)
