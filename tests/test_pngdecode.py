"""The pipelined PNG decode: Pillow's own pixels and info, or None and no work left running."""

import io
import struct
import threading
import zlib

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from isnet_wsgi.image import decode, pngdecode
from isnet_wsgi.image.png import chunk
from isnet_wsgi.runtime import parallel
from tests.helpers import encode_image, open_image, photo_bytes


def png_of(header: tuple[int, int, int, int, int], raw: bytes, *,
           idat_bytes: int = 1 << 30, after_pixels: bytes = b"") -> bytes:
    """A PNG of the given IHDR fields and filtered rows, written directly."""
    width, height, depth, colour_type, interlace = header
    compressed = zlib.compress(raw, 6)
    idats = b"".join(chunk(b"IDAT", compressed[start:start + idat_bytes])
                     for start in range(0, len(compressed), idat_bytes))
    return (b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, colour_type,
                                         0, 0, interlace))
            + idats + after_pixels + chunk(b"IEND", b""))


def noise_rows(width: int, height: int, row_bytes: int, seed: int = 5) -> bytes:
    """Filtered rows of noise, each filter type in turn, so every unfilter runs."""
    rng = np.random.default_rng(seed)
    rows = np.zeros((height, row_bytes + 1), np.uint8)
    rows[:, 0] = np.arange(height) % 5
    rows[:, 1:] = rng.integers(0, 256, (height, row_bytes), np.uint8)
    return rows.tobytes()


def pillow_alone(data: bytes) -> Image.Image:
    return open_image(data)


def loaded_leaving_no_work(data: bytes) -> Image.Image | None:
    """pngdecode.load, checking its inflater has stopped when it returns: an
    inflater still at work would hold its helper, and the next would need another."""
    parallel.submit(int).result()  # the helpers, started and idle
    threads_before = threading.active_count()
    loaded = pngdecode.load(data)
    parallel.submit(int).result()
    assert threading.active_count() == threads_before
    return loaded


def assert_same_image(data: bytes) -> None:
    pipelined = loaded_leaving_no_work(data)
    assert pipelined is not None, "took Pillow alone"
    expected = pillow_alone(data)
    assert (pipelined.format, pipelined.mode, pipelined.size) == (
        expected.format, expected.mode, expected.size)
    assert pipelined.tobytes() == expected.tobytes()
    assert pipelined.info == expected.info


def gradient(mode: str, size=(900, 700)) -> Image.Image:
    width, height = size
    x, y = np.meshgrid(np.arange(width), np.arange(height))
    bands = np.stack([(x * 7 + y * 3) % 256, (x // 3 + y) % 256, (x * y) % 256,
                      (x + y * 5) % 256], axis=-1).astype(np.uint8)
    return Image.fromarray(bands, "RGBA").convert(mode)


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "LA", "P", "1"])
def test_pillows_pngs_decode_to_pillows_pixels(mode):
    # 1-bit pixels: big enough to fill the pieces that make it worth a thread.
    image = gradient(mode, (4000, 1200) if mode == "1" else (900, 700))
    assert_same_image(encode_image(image, "PNG", compress_level=1))


def test_a_photo_with_text_before_and_after_the_pixels():
    text = PngImagePlugin.PngInfo()
    text.add_text("Comment", "before the pixels")
    data = encode_image(open_image(photo_bytes("astronaut.png")), "PNG", pnginfo=text)
    after = chunk(b"tEXt", b"Note\0after the pixels")
    data = data[:-12] + after + data[-12:]
    assert_same_image(data)
    assert pngdecode.load(data).info["Note"] == "after the pixels"


@pytest.mark.parametrize("idat_bytes", [997, 65536, 1 << 30])
@pytest.mark.parametrize("depth, colour_type, samples", [
    (8, 0, 1), (8, 2, 3), (8, 4, 2), (8, 6, 4), (16, 0, 1), (16, 2, 3), (16, 6, 4)])
def test_every_filter_and_any_split_of_the_pixel_data(idat_bytes, depth, colour_type, samples):
    width, height = 1000, 600
    raw = noise_rows(width, height, width * samples * depth // 8)
    assert_same_image(png_of((width, height, depth, colour_type, 0), raw, idat_bytes=idat_bytes))


def broken(kind: str) -> bytes:
    width, height = 640, 480
    raw = noise_rows(width, height, width * 3)
    if kind == "interlaced":
        return png_of((width, height, 8, 2, 1), raw)
    if kind == "small":
        return png_of((300, 200, 8, 2, 0), noise_rows(300, 200, 900))
    if kind == "truncated pixel data":
        data = png_of((width, height, 8, 2, 0), raw, idat_bytes=100_000)
        return data[:len(data) // 2]
    if kind == "the last IDAT chunks missing":
        data = png_of((width, height, 8, 2, 0), raw, idat_bytes=100_000)
        second = data.index(b"IDAT", data.index(b"IDAT") + 4) - 4
        return data[:second] + data[-12:]  # the first IDAT, then IEND
    if kind == "damaged pixel data":
        data = bytearray(png_of((width, height, 8, 2, 0), raw))
        data[5000:5100] = bytes(100)
        return bytes(data)
    if kind == "more pixel data than the header declares":
        return png_of((width, height - 10, 8, 2, 0), raw)
    if kind == "less pixel data than the header declares":
        return png_of((width, height + 10, 8, 2, 0), raw)
    if kind == "an unknown filter type":
        rows = bytearray(raw)
        rows[(width * 3 + 1) * 400] = 9
        return png_of((width, height, 8, 2, 0), bytes(rows))
    if kind == "IDAT chunks apart":
        data = png_of((width, height, 8, 2, 0), raw, idat_bytes=100_000)
        second = data.index(b"IDAT", data.index(b"IDAT") + 4) - 4
        return data[:second] + chunk(b"tEXt", b"a\0b") + data[second:]
    if kind == "animated":
        frames = [gradient("RGB"), gradient("RGB").transpose(Image.Transpose.ROTATE_180)]
        return encode_image(frames[0], "PNG", save_all=True, append_images=frames[1:])
    raise AssertionError(kind)


BROKEN = ["interlaced", "small", "truncated pixel data", "the last IDAT chunks missing",
          "damaged pixel data",
          "more pixel data than the header declares", "less pixel data than the header declares",
          "an unknown filter type", "IDAT chunks apart", "animated"]


@pytest.mark.parametrize("kind", BROKEN)
def test_what_it_cannot_decode_exactly_is_left_to_pillow(kind):
    assert loaded_leaving_no_work(broken(kind)) is None


def decoded_or_error(decode, data: bytes):
    try:
        return "pixels", decode(data).tobytes()
    except Exception as error:  # what the caller sees, error type and message
        return type(error).__name__, str(error)


@pytest.mark.parametrize("kind", BROKEN)
def test_the_service_answers_as_pillow_alone_would(kind, monkeypatch):
    data = broken(kind)

    def decode(data):
        return decode.decode(data, formats=("PNG",), max_pixels=50_000_000,
                              max_dimension_px=1024)

    answer = decoded_or_error(decode, data)
    monkeypatch.setattr(pngdecode, "load", lambda data: None)
    assert answer == decoded_or_error(decode, data)


def test_the_service_decodes_a_large_png_pipelined(monkeypatch):
    data = encode_image(gradient("RGBA"), "PNG")
    taken = []
    load = pngdecode.load
    monkeypatch.setattr(pngdecode, "load", lambda data: taken.append(load(data)) or taken[-1])
    image = decode.decode(data, formats=("PNG",), max_pixels=50_000_000, max_dimension_px=1024)
    assert taken and taken[0] is not None
    assert image.tobytes() == gradient("RGBA").tobytes()


def test_a_reader_that_stops_early_stops_the_inflater():
    """Pillow failing on the first rows must not leave the inflater waiting on a full queue."""
    width, height = 2000, 2000
    rows = bytearray(noise_rows(width, height, width * 3))
    rows[0] = 9  # Pillow stops at the first row, with megabytes still to inflate
    data = png_of((width, height, 8, 2, 0), bytes(rows))
    assert loaded_leaving_no_work(data) is None
    with pytest.raises(OSError):
        Image.open(io.BytesIO(data)).load()
