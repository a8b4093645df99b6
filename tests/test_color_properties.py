"""Property tests of the colour parser: any text is a colour or our ValueError."""

from hypothesis import given, settings
from hypothesis import strategies as st

from isnet_wsgi.options import parse_color

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
