"""Property tests of the colour parser: any text is a colour or our ValueError."""

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from isnet_wsgi.numerals import parse_boolean
from isnet_wsgi.options import BOOLEAN_PATTERN, COLOR_PATTERN, parse_color

channel = st.integers(min_value=0, max_value=255)


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=40))
def test_any_text_is_a_valid_colour_or_a_value_error(text):
    try:
        rgb = parse_color(text)
    except ValueError:
        return
    assert len(rgb) == 3 and all(isinstance(c, int) and 0 <= c <= 255 for c in rgb)


@settings(max_examples=300, deadline=None)
@given(channel, channel, channel, st.sampled_from(["#{:02x}{:02x}{:02x}", "#{:02X}{:02X}{:02X}",
                                                   "{},{},{}", " {} , {} ,{} "]))
def test_every_colour_round_trips_through_each_notation(red, green, blue, notation):
    assert parse_color(notation.format(red, green, blue)) == (red, green, blue)


# The OpenAPI document states what the parsers accept as patterns (schemathesis
# holds the service to them): each pattern matches exactly what its parser reads.
_COLOUR_TEXT = st.text(alphabet="#0123456789abcdefABCDEFxyz, ", max_size=14)


@settings(max_examples=500, deadline=None)
@given(st.one_of(_COLOUR_TEXT, channel.map(str).flatmap(
    lambda red: st.tuples(channel, channel).map(lambda gb: f"{red},{gb[0]},{gb[1]}"))))
def test_the_colour_pattern_matches_what_parse_color_reads(text):
    try:
        parse_color(text)
        readable = True
    except ValueError:
        readable = text.strip() == ""  # blank: the default colour
    assert bool(re.fullmatch(COLOR_PATTERN, text)) == readable


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="tTrRuUeEfFaAlLsSyYnNoO01 x", max_size=7))
def test_the_boolean_pattern_matches_what_parse_boolean_reads(text):
    try:
        parse_boolean(text)
        readable = True
    except ValueError:
        readable = text.strip() == ""  # blank: the default
    assert bool(re.fullmatch(BOOLEAN_PATTERN, text)) == readable
