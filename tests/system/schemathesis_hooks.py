"""schemathesis hooks (SCHEMATHESIS_HOOKS): every file it uploads is a real image.

A schema can only say "binary"; random bytes are a damaged image, refused
400 by design, so the positive cases would never reach the model. These
strategies hand it small real photos (tests/data) in each accepted format,
raw, in a form, or base64-encoded (remove.bg's image_file_b64).
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import schemathesis
from hypothesis import strategies as st
from PIL import Image

# Small, so ~60 examples per operation stay within the test's time.
SIDE_PX = 48
_PHOTO = Path(__file__).resolve().parents[1] / "data" / "camera.png"


def _images() -> list[bytes]:
    """One small photo, as PNG.

    PERF: one image, not one per format: requests that differ only in the
    image are then one model run and cache hits (CACHE_MB), and model runs
    are nearly all of the test's time. Formats are the unit tests' to cover.
    """
    photo = Image.open(_PHOTO).convert("RGB").resize((SIDE_PX, SIDE_PX * 3 // 4))
    buffer = io.BytesIO()
    photo.save(buffer, "PNG")
    return [buffer.getvalue()]


IMAGES = _images()
schemathesis.openapi.format("binary", st.sampled_from(IMAGES))
schemathesis.openapi.format("byte", st.sampled_from([base64.b64encode(data).decode()
                                                     for data in IMAGES]))
for media_type in ("image/*", "application/octet-stream"):
    schemathesis.openapi.media_type(media_type, st.sampled_from(IMAGES))


def _lost_on_the_wire(values: dict) -> bool:
    """Whether a generated form or query says something its request cannot.

    A form field or query parameter that is a list of none or one value: on
    the wire that is the same request without it, or with the one value as
    its text, and schemathesis 4.32 would judge the (valid) request as the
    invalid case it meant. (Seed 1842328894 sent shadow_type=[None] as the
    text "null"; seed 3057913041 meant an unknown query parameter '' = [],
    which sent nothing.) Two or more values are repeated fields: sent.

    Likewise a value of nothing but whitespace: the service reads a blank
    value as one not sent (the schema says so), and schemathesis 4.32 judged
    crop="\u200a\u3000..." with no margin against the crop-needed branch
    alone (seed 3870779968). Blank values are the unit tests' to cover."""
    return any((isinstance(value, list) and len(value) <= 1)
               or (isinstance(value, str) and not value.strip())
               for value in values.values())


@schemathesis.hook
def filter_case(context, case) -> bool:
    if case.media_type == "multipart/form-data" and isinstance(case.body, dict):
        if _lost_on_the_wire(case.body):
            return False
    return not (isinstance(case.query, dict) and _lost_on_the_wire(case.query))
