"""Option parsing: defaults, booleans, ranges and normalised cache keys (no model)."""

import pytest

from isnet_wsgi.config import ConfigError, Settings
from isnet_wsgi.options import (
    OptionError,
    cache_key_part,
    color_options,
    color_spec,
    remove_options,
    remove_spec,
)


def test_defaults_fill_in_the_ceiling():
    options = remove_options({}, ceiling_px=1024)
    assert (options.image_format, options.mask, options.crop, options.margin_px,
            options.max_dimension_px) == ("PNG", False, False, 0, 1024)
    colour = color_options({}, ceiling_px=800)
    assert (colour.image_format, colour.rgb, colour.blur_radius_px,
            colour.max_dimension_px) == ("JPEG", (255, 255, 255), None, 800)


@pytest.mark.parametrize("text, value", [
    ("true", True), ("TRUE", True), ("1", True), ("yes", True), (" Yes ", True),
    ("false", False), ("0", False), ("no", False), ("", False)])
def test_booleans_accept_true_false_1_0_yes_no(text, value):
    assert remove_options({"mask": text}, ceiling_px=1024).mask is value


def test_equal_requests_give_equal_cache_keys():
    spelled = remove_options({"format": "PNG", "max_dimension": "1024", "crop": "yes"},
                             ceiling_px=1024)
    default = remove_options({"crop": "1"}, ceiling_px=1024)
    assert cache_key_part(spelled) == cache_key_part(default)
    jpg = color_options({"format": "jpg", "color": "#ffffff"}, ceiling_px=1024)
    assert cache_key_part(jpg) == cache_key_part(color_options({}, ceiling_px=1024))


def test_a_background_file_with_blur_is_a_conflict():
    with pytest.raises(OptionError) as raised:
        color_options({"blur": "3"}, ceiling_px=1024, background_file=True)
    assert raised.value.code == "conflicting_background"


def test_the_ceiling_bounds_max_dimension_and_margin():
    assert remove_options({"max_dimension": "512"}, ceiling_px=512).max_dimension_px == 512
    for values in ({"max_dimension": "513"}, {"crop": "1", "margin": "513"}):
        with pytest.raises(OptionError):
            remove_options(values, ceiling_px=512)
    with pytest.raises(OptionError) as raised:
        remove_options({"max_dimension": "\u00b2"}, ceiling_px=512)  # a digit, not ASCII
    assert raised.value.code == "invalid_max_dimension"


def test_the_settings_of_these_options_are_read_and_validated():
    settings = Settings.from_env({"CACHE_MB": "0.5", "REFINE_DEFAULT": "yes"})
    assert settings.cache_bytes == 512 * 1024 and settings.refine_default is True
    assert settings.public()["cache_mb"] == 0.5 and settings.public()["refine_default"] is True
    defaults = Settings.from_env({})
    assert defaults.cache_mb == 8 and defaults.refine_default is False
    assert remove_options({}, ceiling_px=64, refine_default=True).refine is True
    assert remove_options({"refine": "no"}, ceiling_px=64, refine_default=True).refine is False
    for name, value in (("CACHE_MB", "-1"), ("CACHE_MB", "lots"), ("REFINE_DEFAULT", "2")):
        with pytest.raises(ConfigError, match=name):
            Settings.from_env({name: value})


# Numbers as int(), float(), str.isdigit() or the regex \d take them, but not in ASCII digits.
NOT_ASCII_NUMBERS = ["\uff12\uff15\uff15", "\u0662\u0665\u0665", "\u00b2", "2_5"]


@pytest.mark.parametrize("spelled", NOT_ASCII_NUMBERS)
def test_one_rule_for_numbers_in_every_option_colour_and_setting(spelled):
    cases = [
        (lambda n: remove_options({"max_dimension": n}, ceiling_px=1024), OptionError),
        (lambda n: remove_options({"crop": "1", "margin": n}, ceiling_px=1024), OptionError),
        (lambda n: color_options({"blur": n}, ceiling_px=1024), OptionError),
        (lambda n: color_options({"color": f"{n},0,0"}, ceiling_px=1024), OptionError),
        (lambda n: color_options({"color": f"0, {n}, 0"}, ceiling_px=1024), OptionError),
        (lambda n: Settings.from_env({"MAX_DIMENSION": n + "0"}), ConfigError),
        (lambda n: Settings.from_env({"MAX_UPLOAD_MB": n}), ConfigError),
    ]
    for parse, error in cases:
        with pytest.raises(error):
            parse(spelled)
    assert color_options({"color": "255,0,0"}, ceiling_px=1024).rgb == (255, 0, 0)
    assert color_options({"blur": "2.5"}, ceiling_px=1024).blur_radius_px == 2.5
    assert remove_options({"max_dimension": "255"}, ceiling_px=1024).max_dimension_px == 255
    assert Settings.from_env({"MAX_DIMENSION": "2550", "MAX_UPLOAD_MB": "2.5"}).max_upload_mb == 2.5


@pytest.mark.parametrize("spec, parse", [(remove_spec, remove_options),
                                         (color_spec, color_options)])
def test_what_the_spec_documents_is_what_the_parser_accepts(spec, parse):
    crop = {"crop": "true"} if spec is remove_spec else {}  # margin needs it
    for option in spec(ceiling_px=512):
        schema = option.schema()
        for value in schema.get("enum", []):
            parse({option.name: value, **crop}, ceiling_px=512)
        if "maximum" in schema:
            top = schema["maximum"]
            parse({option.name: f"{top:g}", **crop}, ceiling_px=512)
            with pytest.raises(OptionError) as refused:
                parse({option.name: f"{top + 1:g}", **crop}, ceiling_px=512)
            assert refused.value.code == f"invalid_{option.name}"
        if "default" in schema:
            parsed = parse({}, ceiling_px=512)
            explicit = parse({option.name: str(schema["default"]).lower()}, ceiling_px=512)
            assert parsed == explicit
