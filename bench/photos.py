"""The benchmark's inputs: the repository's real test photos at 1024 px.

The photos are small (512 px); users send phone photos. Each is upscaled so
its long side is 1024 px, which is also the model's input size, so every
request does the same work in both servers.
"""

from __future__ import annotations

import io
import struct
import uuid
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from isnet_wsgi.model.segmenter import ModelInput
from models.measure import mask_iou

ROOT = Path(__file__).resolve().parent.parent
PHOTO_DIR = ROOT / "tests" / "data"
PHOTO_NAMES = ("astronaut.png", "coffee.png", "camera.png", "hubble_deep_field.jpg")
LONG_SIDE_PX = 1024


def load(name: str, long_side_px: int = LONG_SIDE_PX) -> Image.Image:
    with Image.open(PHOTO_DIR / name) as opened:
        image = opened.convert("RGB")
    scale = long_side_px / max(image.size)
    size = (round(image.width * scale), round(image.height * scale))
    return image.resize(size, Image.Resampling.LANCZOS)


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


def unique(png: bytes) -> bytes:
    """The same picture with a random tEXt chunk after IHDR: other bytes.

    NOTE: the service caches results by the upload's digest; the bench
    times the work, so every request sends bytes no server has seen.
    """
    text = b"bench\x00" + uuid.uuid4().hex.encode()
    chunk = struct.pack(">I", len(text)) + b"tEXt" + text
    chunk += struct.pack(">I", zlib.crc32(b"tEXt" + text) & 0xFFFFFFFF)
    ihdr_end = 8 + 25  # signature, then IHDR: length, type, 13 bytes, CRC
    return png[:ihdr_end] + chunk + png[ihdr_end:]


def uploads() -> list[tuple[str, bytes]]:
    """(file name, 1024-px PNG bytes) for every photo."""
    return [(Path(name).stem + ".png", png_bytes(load(name))) for name in PHOTO_NAMES]


def write_tensors(folder: Path, model_input: ModelInput) -> list[Path]:
    """The model input of each photo, made as the service makes it, as .npy files.

    NOTE: made once by the parent, so a frontier child's peak RSS holds no
    Pillow decode, only the tensor it feeds (the same one for every point).
    """
    paths = []
    for name in PHOTO_NAMES:
        tensor = model_input.tensor(load(name))
        path = folder / (Path(name).stem + ".npy")
        np.save(path, tensor)
        paths.append(path)
    return paths


def alpha(png: bytes) -> Image.Image:
    """A cut-out's alpha channel, as an 'L' image."""
    with Image.open(io.BytesIO(png)) as image:
        return image.convert("RGBA").getchannel("A")


def alpha_iou(png_a: bytes, png_b: bytes) -> float:
    """Intersection over union of two cut-outs' alpha channels (foreground >= 128 of 255)."""
    return mask_iou(alpha(png_a), alpha(png_b))
