"""Settings come from the environment and are validated once."""

import dataclasses
import re
from pathlib import Path

import pytest

from isnet_wsgi.config import ConfigError, Settings
from isnet_wsgi.options import remove_options


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


def _readme_settings_table() -> dict[str, str]:
    """The README's settings tables, one per purpose (its "### ..." groups
    under "## Settings"): variable -> its default cell. A variable in two
    groups would be two places to keep in step, so each appears once."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("\n## Settings", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([A-Z_]+)` \| ([^|]+) \|", section, flags=re.MULTILINE)
    names = [name for name, _ in rows]
    twice = sorted({name for name in names if names.count(name) > 1})
    assert not twice, f"the README lists these settings twice: {twice}"
    return {name: cell.strip() for name, cell in rows}


def _as_readme_writes_it(declaration, default) -> str:
    if declaration.default_text:
        return declaration.default_text
    if default is None:
        return "unset"
    if isinstance(default, bool):
        return f"`{str(default).lower()}`"
    if isinstance(default, tuple):
        return f"`{','.join(default)}`"
    return f"`{default:g}`" if isinstance(default, float) else f"`{default}`"


def test_the_readme_lists_every_setting_with_its_declared_default():
    table = _readme_settings_table()
    declared = {declaration.env: (field, declaration)
                for field, _, declaration in Settings.declarations()}
    assert set(table) == set(declared)
    for env, (field, declaration) in declared.items():
        default = None if field.default is dataclasses.MISSING else field.default
        assert table[env].strip("`") == _as_readme_writes_it(declaration, default).strip("`"), env


def test_booleans_read_the_same_everywhere():
    for word, value in [("on", True), ("Yes", True), ("1", True), ("off", False), ("NO", False)]:
        assert Settings.from_env({"ORT_CPU_ARENA": word}).ort_cpu_arena is value
        assert remove_options({"mask": word}, ceiling_px=1024).mask is value
