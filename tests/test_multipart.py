"""multipart/form-data: bodies as real clients send them, every split, the decoder's events."""

from __future__ import annotations

import pytest

from isnet_wsgi.web.multipart import (
    NEED_DATA,
    Epilogue,
    Form,
    MultipartDecoder,
    PartData,
    PartStart,
    boundary_from_content_type,
    read_form,
)
from tests.multipart_bodies import (
    BOUNDARY,
    CHROME_FORM,
    CLIENTS,
    PNG_BYTES,
    CountingReader,
    body_of,
    form_data,
    parse,
)

# --- real clients -------------------------------------------------------------


@pytest.mark.parametrize("client", CLIENTS)
def test_parses_bodies_as_browsers_and_curl_send_them_crlf_or_lf(client):
    content_type, body, expected = CLIENTS[client]
    assert parse(body, boundary_from_content_type(content_type)) == expected


@pytest.mark.parametrize("client", CLIENTS)
def test_every_split_position_gives_the_same_form(client):
    content_type, body, expected = CLIENTS[client]
    boundary = boundary_from_content_type(content_type)
    for split in range(len(body) + 1):
        pieces = iter([piece for piece in (body[:split], body[split:]) if piece])  # b"" ends it
        form = read_form(lambda n: next(pieces, b""), boundary, max_file_bytes=1000)
        assert form == expected, split


@pytest.mark.parametrize("client", CLIENTS)
def test_one_byte_at_a_time_gives_the_same_form(client):
    content_type, body, expected = CLIENTS[client]
    reader = CountingReader(body, piece=1)
    boundary = boundary_from_content_type(content_type)
    assert read_form(reader.read, boundary, max_file_bytes=1000) == expected


def test_a_browser_form_keeps_fields_and_files_apart_by_name():
    assert CHROME_FORM.fields["size"][0] == "preview"
    assert "missing" not in CHROME_FORM.fields
    assert CHROME_FORM.files["file"][0].data == PNG_BYTES
    assert "size" not in CHROME_FORM.files


def test_preamble_epilogue_and_transport_padding_are_ignored():
    body = (
        b"This is a preamble.\r\n--" + BOUNDARY + b" \t\r\n" + form_data("a", b"1") + b"\r\n--"
        + BOUNDARY + b"--  \r\nThis is an epilogue, --" + BOUNDARY + b"\r\ngarbage"
    )
    assert parse(body) == Form(fields={"a": ["1"]})


def test_data_that_almost_matches_the_boundary_is_kept():
    value = b"\r\n--" + BOUNDARY[:-1] + b"X\r\n-" + b"\n--" + BOUNDARY[:10] + b"\r"
    assert parse(body_of(form_data("f", value, "x.bin"))).files["f"][0].data == value


@pytest.mark.parametrize("disposition", [
    b"filename*=UTF-8''caf%E9.png",  # not UTF-8
    b"filename*=x-unknown''cat.png",  # a charset nobody knows
    b"filename*0*=UTF-8''ca; filename*1=t.png",  # RFC 2231 continuations
    b"filename*0=cat; filename*1*=%FF.png",
])
def test_a_filename_in_any_form_makes_a_file_part(disposition):
    # The data is not UTF-8: taken for a text field, this form would be refused.
    part = b'Content-Disposition: form-data; name="file"; ' + disposition + b"\r\n\r\n\x89PNG\xff"
    form = parse(body_of(part))
    assert form.fields == {}
    assert form.files["file"][0].data == b"\x89PNG\xff"
    assert form.files["file"][0].filename.endswith(".png")


def test_header_names_are_case_insensitive_and_extra_headers_kept():
    part = (
        b'content-disposition: FORM-DATA; NAME="a"; filename*=UTF-8\'\'na%C3%AFve.png\r\n'
        b"CONTENT-TYPE: image/png\r\nX-Extra:  yes \r\n\r\nxyz"
    )
    decoder = MultipartDecoder(BOUNDARY)
    decoder.receive_data(body_of(part))
    start = decoder.next_event()
    assert start == PartStart(
        name="a",
        filename="naïve.png",
        content_type="image/png",
        headers={
            "content-disposition": "FORM-DATA; NAME=\"a\"; filename*=UTF-8''na%C3%AFve.png",
            "content-type": "image/png",
            "x-extra": "yes",
        },
    )


# --- the decoder's events ------------------------------------------------------


def events_of(decoder: MultipartDecoder) -> list:
    events = []
    while (event := decoder.next_event()) is not NEED_DATA:
        events.append(event)
    return events


def test_decoder_emits_start_data_and_epilogue_then_need_data():
    decoder = MultipartDecoder(BOUNDARY)
    assert decoder.next_event() is NEED_DATA
    decoder.receive_data(body_of(form_data("a", b"hello"), form_data("b", b"", "")))
    assert events_of(decoder) == [
        PartStart("a", None, None, {"content-disposition": 'form-data; name="a"'}),
        PartData(b"hello", more=False),
        PartStart("b", "", None, {"content-disposition": 'form-data; name="b"; filename=""'}),
        PartData(b"", more=False),
        Epilogue(),
    ]
    decoder.receive_data(b"more epilogue")
    decoder.receive_data(None)
    assert decoder.next_event() is NEED_DATA


def test_decoder_holds_back_only_a_possible_partial_delimiter():
    decoder = MultipartDecoder(BOUNDARY)
    decoder.receive_data(b"--" + BOUNDARY + b"\r\n" + form_data("a", b"abc\r\n--" + BOUNDARY[:5]))
    assert events_of(decoder)[1:] == [PartData(b"abc", more=True)]
    decoder.receive_data(b"nope")  # not the boundary after all: the held bytes were data
    assert events_of(decoder) == [PartData(b"\r\n--" + BOUNDARY[:5] + b"nope", more=True)]
    decoder.receive_data(b"\r")
    assert events_of(decoder) == []
    decoder.receive_data(b"\n--" + BOUNDARY + b"--")
    assert events_of(decoder) == [PartData(b"", more=False), Epilogue()]


@pytest.mark.parametrize("client", CLIENTS)
def test_decoder_events_do_not_depend_on_where_the_input_is_split(client):
    content_type, body, _ = CLIENTS[client]
    boundary = boundary_from_content_type(content_type)

    def merged_events(pieces: list[bytes]) -> list:
        decoder, events = MultipartDecoder(boundary), []
        for piece in pieces:
            decoder.receive_data(piece)
            events += events_of(decoder)
        merged: list = []
        for event in events:
            if isinstance(event, PartData) and merged and isinstance(merged[-1], PartData):
                event = PartData(merged.pop().data + event.data, event.more)
            merged.append(event)
        return merged

    whole = merged_events([body])
    assert isinstance(whole[-1], Epilogue)
    for split in range(len(body) + 1):
        assert merged_events([body[:split], body[split:]]) == whole, split
    assert merged_events([body[i : i + 1] for i in range(len(body))]) == whole


def test_8_mb_file_in_64_kib_chunks_is_linear():
    payload = bytes(range(256)) * (8 * 1024 * 1024 // 256)
    body = body_of(form_data("file", payload, "big.png"))
    framing_bytes = body.index(payload)  # the delimiter line and the part's headers
    decoder = MultipartDecoder(BOUNDARY)
    chunk_bytes, fed, emitted = 64 * 1024, 0, 0
    for offset in range(0, len(body), chunk_bytes):
        decoder.receive_data(body[offset : offset + chunk_bytes])
        fed += len(body[offset : offset + chunk_bytes])
        events = events_of(decoder)
        emitted += sum(len(e.data) for e in events if isinstance(e, PartData))
        # Counting work, not time: all but a possible partial delimiter is
        # passed on at once, so each search scans only the new chunk and a
        # few held bytes, and a chunk takes a few searches, not one per byte.
        held_back = min(fed - framing_bytes, len(payload)) - emitted
        assert 0 <= held_back < len(b"\r\n--" + BOUNDARY), offset
        assert len(events) <= 4, offset
    assert emitted == len(payload)
    assert parse(body, max_file_bytes=len(payload)).files["file"][0].data == payload
