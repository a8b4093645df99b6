"""Header parameters as clients send them: quoting, RFC 2231/5987 values, continuations."""

from __future__ import annotations

import pytest

from isnet_wsgi.web.headers import parse_options_header


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("multipart/form-data; boundary=abc", ("multipart/form-data", {"boundary": "abc"})),
        ('Multipart/Form-Data; BOUNDARY="a b"', ("multipart/form-data", {"boundary": "a b"})),
        ('form-data; name="a\\"b\\\\c"', ("form-data", {"name": 'a"b\\c'})),
        (
            'form-data; filename="C:\\Users\\me\\cat.png"',
            ("form-data", {"filename": "C:\\Users\\me\\cat.png"}),
        ),
        ('form-data; name="a;b"; filename="x"', ("form-data", {"name": "a;b", "filename": "x"})),
        (
            "form-data; filename*=UTF-8''na%C3%AFve.png; filename=\"naive.png\"",
            ("form-data", {"filename": "naïve.png"}),
        ),
        ("form-data; filename*=iso-8859-1'en'%E9t%E9.png", ("form-data", {"filename": "été.png"})),
        ('form-data; name="a"; name="b"', ("form-data", {"name": "a"})),
        ("form-data; a*b=1", ("form-data", {"a*b": "1"})),  # a "*" inside: a plain key
        ("text/plain", ("text/plain", {})),
        ("", ("", {})),
        (None, ("", {})),
    ],
)
def test_parse_options_header(header, expected):
    assert parse_options_header(header) == expected


@pytest.mark.parametrize(
    ("header", "filename"),
    [
        # RFC 2231 continuations: joined in order, extended pieces percent-decoded,
        # the charset named once, a character may straddle two pieces.
        ("form-data; filename*0*=UTF-8''na%C3; filename*1*=%AFve; filename*2=\".png\"",
         "naïve.png"),
        ("form-data; filename*1=b.png; filename*0=a-", "a-b.png"),  # order by number
        ("form-data; filename*0*=iso-8859-1''%E9t; filename*1*=%E9.png", "été.png"),
        ("form-data; filename*0=a; filename*2=c", "a"),  # a gap ends the value
        # A decodable extended value wins over the plain one, whatever the order.
        ("form-data; filename=p.png; filename*0*=UTF-8''ext; filename*1=.png", "ext.png"),
        # An undecodable one gives way to the plain value ...
        ("form-data; filename*=bogus''x; filename=a.png", "a.png"),
        ("form-data; filename*=UTF-8''caf%E9.png; filename=cafe.png", "cafe.png"),
        ("form-data; filename*0*=UTF-8''%FF; filename*1=.png; filename=p.png", "p.png"),
        # ... and without one is kept, its bad bytes replaced: never dropped.
        ("form-data; filename*=UTF-8''caf%E9.png", "caf\ufffd.png"),
        ("form-data; filename*=bogus''x.png", "x.png"),
        ("form-data; filename*=no-quotes", "no-quotes"),
        ("form-data; filename*0*=UTF-8''%FF%FE; filename*1=.png", "\ufffd\ufffd.png"),
        ("form-data; filename*1=only-the-second", ""),
    ],
)
def test_a_filename_in_any_form_is_kept(header, filename):
    assert parse_options_header(header)[1]["filename"] == filename


@pytest.mark.parametrize(
    "junk",
    [";", ";;=;", '; name="unterminated', "a/b; =x; key", "\x00; \udcff=\x7f", "; k*=UTF-8''%ZZ%",
     "; k*=\udcff''%41", "; k*0*=\x00''x; k*1*=%", "; k*999=x; k*0*='", "; k*=utf-8\x00''x"],
)
def test_parse_options_header_never_raises_on_junk(junk):
    mimetype, params = parse_options_header(junk)
    assert isinstance(mimetype, str) and isinstance(params, dict)
