"""Decoding every mode and format we accept, resizing, masks and colours."""

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from isnet_wsgi.image import compose, encode, errors, shrink
from isnet_wsgi.image.decode import FORMAT_BY_EXTENSION, decode as decode_upload
from isnet_wsgi.options import parse_color
from isnet_wsgi.runtime import memory
from tests.helpers import encode_image, open_image, photo_bytes, reset_peak_rss

FORMATS = tuple(sorted(set(FORMAT_BY_EXTENSION.values())))


def decode(data, max_pixels=25_000_000, max_dimension_px=1024, budget_bytes=None):
    return decode_upload(data, formats=FORMATS, max_pixels=max_pixels,
                         max_dimension_px=max_dimension_px, budget_bytes=budget_bytes)


def gradient(mode_size=(64, 48)):
    width, height = mode_size
    ramp = np.linspace(0, 255, width, dtype=np.uint8)
    return np.tile(ramp, (height, 1))


@pytest.mark.parametrize("make, image_format, expected_mode", [
    (lambda: Image.fromarray(gradient()).convert("CMYK"), "JPEG", "RGB"),
    (lambda: Image.fromarray(gradient()).convert("P"), "PNG", "RGB"),
    (lambda: Image.fromarray(gradient()).convert("LA"), "PNG", "RGBA"),
    (lambda: Image.fromarray(gradient()).convert("1"), "BMP", "RGB"),
    (lambda: Image.frombytes("I;16", (64, 48), (gradient().astype("<u2") * 257).tobytes()),
     "PNG", "RGB"),
    (lambda: Image.fromarray(gradient().astype(np.int32) * 257, "I"), "TIFF", "RGB"),
])
def test_every_mode_comes_out_rgb_or_rgba_with_its_tones(make, image_format, expected_mode):
    image = decode(encode_image(make(), image_format))
    assert image.mode == expected_mode
    grey = np.asarray(image.convert("L"), dtype=int)
    # The ramp survives: dark on the left, bright on the right, not clipped to white.
    assert grey[:, :4].mean() < 60 and grey[:, -4:].mean() > 190


def test_palette_with_transparency_keeps_its_alpha():
    image = Image.new("P", (8, 8), 0)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    image.putpixel((0, 0), 1)
    decoded = decode(encode_image(image, "PNG", transparency=0))
    assert decoded.mode == "RGBA"
    assert decoded.getpixel((0, 0)) == (255, 0, 0, 255)
    assert decoded.getpixel((1, 1))[3] == 0


def test_animated_gif_uses_the_first_frame():
    frames = [Image.new("RGB", (16, 16), color) for color in ("red", "blue", "green")]
    data = encode_image(frames[0], "GIF", save_all=True, append_images=frames[1:])
    assert decode(data).convert("RGB").getpixel((8, 8)) == (255, 0, 0)


def test_animated_webp_uses_the_first_frame():
    frames = [Image.new("RGB", (16, 16), color) for color in ("red", "blue")]
    data = encode_image(frames[0], "WEBP", save_all=True, append_images=frames[1:], lossless=True)
    assert decode(data).getpixel((8, 8))[:3] == (255, 0, 0)


def tiny_file_declaring(image_format: str, width: int, height: int) -> bytes:
    """A few-hundred-byte file whose header claims width x height pixels."""
    data = bytearray(encode_image(Image.new("L", (1, 1)), image_format))
    if image_format == "PNG":  # IHDR follows the 8-byte signature; fix its CRC
        data[16:24] = struct.pack(">II", width, height)
        data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    elif image_format == "GIF":  # logical screen, then the image descriptor
        data[6:10] = struct.pack("<HH", width, height)
        descriptor = data.index(b"\x2c\x00\x00\x00\x00\x01\x00\x01\x00")
        data[descriptor + 5:descriptor + 9] = struct.pack("<HH", width, height)
    elif image_format == "TIFF":  # ImageWidth (256) and ImageLength (257), LONGs
        for tag, value in ((256, width), (257, height)):
            entry = data.index(struct.pack("<HHI", tag, 4, 1))
            data[entry + 8:entry + 12] = struct.pack("<I", value)
    return bytes(data)


@pytest.mark.parametrize("image_format", ["PNG", "GIF", "TIFF"])
def test_pixel_bomb_is_refused_from_its_header(image_format):
    data = tiny_file_declaring(image_format, 40000, 40000)
    assert len(data) < 1000
    with pytest.raises(Image.DecompressionBombError, match="1600000000 pixels"):
        Image.open(io.BytesIO(data))  # what Pillow reads from the header
    with pytest.raises(errors.ImageTooLarge):
        decode(data)


def test_our_pixel_budget_is_stricter_than_pillows():
    data = encode_image(Image.new("RGB", (300, 300)), "PNG")
    with pytest.raises(errors.ImageTooLarge, match="90000"):
        decode(data, max_pixels=50_000)


def test_large_jpeg_is_decoded_small_and_fitted():
    big = Image.fromarray(np.random.default_rng(0).integers(0, 255, (3000, 4000, 3), np.uint8))
    image = decode(encode_image(big, "JPEG"))
    assert image.size == (1024, 768)


def test_small_images_are_never_upscaled():
    assert decode(encode_image(Image.new("RGB", (30, 20)), "PNG")).size == (30, 20)


def test_cutout_and_colour_use_the_mask_as_soft_alpha():
    image = Image.new("RGB", (2, 1), (200, 100, 0))
    mask = Image.frombytes("L", (2, 1), bytes([255, 128]))
    assert compose.cutout(image, mask).getpixel((1, 0)) == (200, 100, 0, 128)
    blended = compose.on_color(image, mask, (0, 0, 255)).getpixel((1, 0))
    assert blended[0] == pytest.approx(100, abs=2) and blended[2] == pytest.approx(127, abs=2)


def test_cutout_leaves_no_colour_under_full_transparency():
    image = Image.new("RGBA", (3, 1), (200, 100, 50, 255))
    image.putpixel((2, 0), (200, 100, 50, 0))  # the input's own alpha counts too
    mask = Image.frombytes("L", (3, 1), bytes([0, 1, 255]))
    cut = compose.cutout(image, mask)
    assert [cut.getpixel((x, 0)) for x in range(3)] == [
        (0, 0, 0, 0), (200, 100, 50, 1), (0, 0, 0, 0)]


def test_encoders_round_trip():
    image = open_image(photo_bytes("camera.png")).convert("RGBA")
    assert open_image(encode.encode(image, "PNG")).mode == "RGBA"
    assert open_image(encode.encode(image, "JPEG")).format == "JPEG"


@pytest.mark.parametrize("text, rgb", [
    ("#FFFFFF", (255, 255, 255)), ("#0a0B0c", (10, 11, 12)), ("#f00", (255, 0, 0)),
    ("0,128,255", (0, 128, 255)), (" 1 , 2 , 3 ", (1, 2, 3)), ("00ff00", (0, 255, 0))])
def test_parse_color_accepts_the_documented_forms(text, rgb):
    assert parse_color(text) == rgb


@pytest.mark.parametrize("text", ["", "#", "#ff", "#fffff", "#1234567", "red", "1,2",
                                  "1,2,3,4", "256,0,0", "-1,0,0", "1.5,2,3", "#ggg"])
def test_parse_color_refuses_everything_else(text):
    with pytest.raises(ValueError):
        parse_color(text)


# --- The decode memory budget ---------------------------------------------

BUDGET_BYTES = 160 * 1024 * 1024  # DECODE_BUDGET_MB's default


def png_of_rows(width: int, height: int, bit_depth: int, colour_type: int, row: bytes) -> bytes:
    """A PNG of identical rows, written directly: kilobytes for any size."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body)))
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    pixels = zlib.compress((b"\0" + row) * height, 9)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels)
            + chunk(b"IEND", b""))


# The small files of issue 12 that decode huge, each a few KB.
SMALL_BUT_HUGE = {
    "5000x5000 lossless RGBA WebP": lambda: encode_image(
        Image.new("RGBA", (5000, 5000), (10, 200, 30, 128)), "WEBP", lossless=True),
    "5000x5000 float TIFF": lambda: encode_image(
        Image.new("F", (5000, 5000), 1234.5), "TIFF", compression="tiff_adobe_deflate"),
    "5000x5000 16-bit grey PNG": lambda: png_of_rows(5000, 5000, 16, 0, b"\x12\x34" * 5000),
    "25000000x1 RGB PNG": lambda: png_of_rows(25_000_000, 1, 8, 2, b"\x80\x40\x20" * 25_000_000),
}


@pytest.mark.parametrize("name", SMALL_BUT_HUGE)
def test_a_small_file_that_decodes_huge_stays_within_the_budget(name):
    data = SMALL_BUT_HUGE[name]()
    assert len(data) < 200_000
    memory.trim()
    reset_peak_rss()
    before_mb = memory.rss_mb()
    try:
        image = decode(data, budget_bytes=BUDGET_BYTES)
    except errors.DecodeBudgetExceeded as error:
        assert "the decode budget is 160 MB" in str(error)
    else:
        assert image.mode in ("RGB", "RGBA") and max(image.size) == 1024
    assert memory.peak_rss_mb() - before_mb < BUDGET_BYTES / 2**20


@pytest.mark.parametrize("name", ["5000x5000 lossless RGBA WebP", "25000000x1 RGB PNG"])
def test_the_worst_of_them_are_refused_before_decoding(name):
    with pytest.raises(errors.DecodeBudgetExceeded) as refused:
        decode(SMALL_BUT_HUGE[name](), budget_bytes=BUDGET_BYTES)
    assert refused.value.code == "decode_budget_exceeded"
    assert isinstance(refused.value, errors.ImageTooLarge)  # answered 413


def test_the_budget_counts_bytes_not_pixels():
    data = png_of_rows(3000, 3000, 16, 6, b"\x12\x34\x56\x78\x9a\xbc\xde\xf0" * 3000)
    assert decode(data, budget_bytes=64 * 2**20).mode == "RGBA"
    with pytest.raises(errors.DecodeBudgetExceeded, match="3000x3000 px PNG.* 16 MB"):
        decode(data, budget_bytes=16 * 2**20)


def gradient_image(mode: str, size: tuple[int, int]) -> Image.Image:
    """Bands that vary along both axes, so a shifted or seamed strip would show."""
    width, height = size
    x, y = np.meshgrid(np.arange(width), np.arange(height))
    # Alpha stays >= 128: below that, un-premultiplying magnifies one level of
    # difference in the premultiplied pixels into many.
    bands = [(x * 7 + y * 3) % 256, (x // 5 + y * 11) % 256, (x * y) % 256,
             128 + (x + y * 5) % 128]
    rgba = Image.fromarray(np.stack(bands, axis=-1).astype(np.uint8), "RGBA")
    if mode in ("RGBA", "LA"):
        return rgba.convert(mode)
    return rgba.convert("RGB").convert(mode)  # P: a palette without transparency


@pytest.mark.parametrize("mode, size", [
    ("RGBA", (2500, 1900)),   # LANCZOS in strips
    ("RGBA", (7000, 900)),    # reduced by 2 in strips, then LANCZOS
    ("LA", (1900, 2500)),
    ("P", (3300, 1200)),
    ("RGB", (4100, 700)),     # Pillow's own resize: no copy to avoid
])
def test_shrinking_in_strips_gives_pillows_whole_image_pixels(mode, size):
    image = gradient_image(mode, size)
    expected = image.convert("RGBA" if mode in ("RGBA", "LA") else "RGB").resize(
        shrink.fit_size(size, 1024), Image.Resampling.LANCZOS, reducing_gap=3.0)
    decoded = decode(encode_image(image, "PNG", compress_level=1))
    assert decoded.mode == expected.mode and decoded.size == expected.size
    # The strips' boxes are the whole image's to within float rounding: a
    # fixed-point coefficient may round the other way, one level, for ~0.1%
    # of the values of this (deliberately busy) pattern.
    difference = np.abs(np.asarray(decoded, int) - np.asarray(expected, int))
    assert difference.max() <= (2 if decoded.mode == "RGBA" else 1)
    assert np.count_nonzero(difference) < difference.size / 100


@pytest.mark.parametrize("mode, peak", [("I;16", 65535), ("I", 70000), ("F", 3000.0)])
def test_large_high_bit_depth_images_keep_their_tones(mode, peak):
    ramp = np.tile(np.linspace(0, peak, 3000, dtype=np.float64), (2000, 1))
    dtype = {"I;16": "<u2", "I": np.int32, "F": np.float32}[mode]
    image = Image.fromarray(ramp.astype(dtype))
    assert image.mode == mode
    grey = np.asarray(decode(encode_image(image, "TIFF")).convert("L"), int)
    assert grey.shape == (683, 1024)
    assert grey[:, :8].mean() < 5 and grey[:, -8:].mean() > 250
    assert abs(grey[:, 512].mean() - 127.5) < 3  # scaled, not clipped


def test_exif_orientation_is_applied_to_a_shrunk_png():
    image = gradient_image("RGB", (2000, 1000))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    decoded = decode(encode_image(image, "PNG", exif=exif.tobytes()))
    assert decoded.size == (512, 1024)
    expected = image.resize((1024, 512), Image.Resampling.LANCZOS).transpose(
        Image.Transpose.ROTATE_270)
    assert np.abs(np.asarray(decoded, int) - np.asarray(expected, int)).max() <= 1


def test_nan_in_a_float_image_is_black_not_an_error():
    ramp = np.tile(np.linspace(0, 3000, 64, dtype=np.float32), (8, 1))
    ramp[:, 0] = np.nan
    grey = np.asarray(decode(encode_image(Image.fromarray(ramp), "TIFF")).convert("L"), int)
    assert grey[:, 0].max() == 0 and grey[:, -1].min() == 255


def test_a_multi_picture_jpeg_is_decoded_reduced_too():
    pictures = [Image.new("RGB", (4000, 3000), colour) for colour in ("red", "blue")]
    data = encode_image(pictures[0], "MPO", save_all=True, append_images=pictures[1:])
    memory.trim()
    reset_peak_rss()
    before_mb = memory.rss_mb()
    image = decode(data)
    red, green, blue = image.getpixel((5, 5))
    assert image.size == (1024, 768) and red > 240 and green < 16 and blue < 16
    # At 1/2 scale: 12 MB of pixels; in full it would have been 46.
    assert memory.peak_rss_mb() - before_mb < 30
