"""The one rule for numbers written as text: ASCII digits, one optional point."""

import pytest

from isnet_wsgi.numerals import MAX_DIGITS, parse_decimal_number, parse_whole_number


@pytest.mark.parametrize("text, value", [("0", 0), ("42", 42), ("007", 7),
                                         ("9" * MAX_DIGITS, int("9" * MAX_DIGITS))])
def test_whole_numbers(text, value):
    assert parse_whole_number(text) == value


@pytest.mark.parametrize("text, value", [("2", 2.0), ("2.5", 2.5), (".5", 0.5), ("0.25", 0.25)])
def test_decimal_numbers(text, value):
    assert parse_decimal_number(text) == value
    with pytest.raises(ValueError):
        parse_whole_number(text if "." in text else text + ".0")


@pytest.mark.parametrize("text", [
    "", " 1", "1 ", "1\n", "+1", "-1", "1_0", "1e3", "inf", "nan", "0x10", "1.", "1.2.3",
    "\uff11", "\u0661", "\u00b2", "\u2460", "1" * (MAX_DIGITS + 2)])
def test_anything_else_is_a_value_error(text):
    with pytest.raises(ValueError):
        parse_decimal_number(text)
    with pytest.raises(ValueError):
        parse_whole_number(text)
