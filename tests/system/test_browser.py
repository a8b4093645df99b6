"""GET / in a real headless Chromium, served by real gunicorn: drop a photo in,
get the cut-out and its mask back, with nothing loaded from outside."""

from __future__ import annotations

from tests.helpers import photo_bytes
from tests.system.webdriver import headless_chromium

# Share of the result's pixels that are (mostly) transparent and opaque, and
# whether every resource the page loaded came from the server itself.
INSPECT_RESULT = """
const image = document.getElementById("result");
const canvas = document.createElement("canvas");
canvas.width = image.naturalWidth; canvas.height = image.naturalHeight;
const context = canvas.getContext("2d");
context.drawImage(image, 0, 0);
const data = context.getImageData(0, 0, canvas.width, canvas.height).data;
let clear = 0, opaque = 0;
for (let i = 3; i < data.length; i += 4) { if (data[i] < 128) clear++; else opaque++; }
const mask = document.getElementById("mask");
const origin = location.origin;
return {width: canvas.width, height: canvas.height, clear: clear / (clear + opaque),
        opaque: opaque / (clear + opaque),
        mask: [mask.naturalWidth, mask.naturalHeight],
        status: document.getElementById("status").textContent,
        outside: performance.getEntriesByType("resource").map(r => r.name)
                   .filter(name => !name.startsWith(origin) && !name.startsWith("blob:")
                                   && !name.startsWith("data:"))};
"""


def test_a_person_drops_a_photo_and_sees_the_cutout_and_its_mask(server, tmp_path):
    photo = tmp_path / "astronaut.png"
    photo.write_bytes(photo_bytes("astronaut.png"))
    with headless_chromium(tmp_path / "profile") as browser:
        browser.open(f"http://127.0.0.1:{server.port}/")
        assert browser.run("return document.title") == "isnet-wsgi"
        assert browser.run("return document.body.dataset.state") == "idle"
        browser.send_file("#file", photo)
        state = browser.wait_for(
            "const s = document.body.dataset.state; return s === 'idle' || s === 'working' "
            "? null : s", timeout_s=120)
        result = browser.run(INSPECT_RESULT)
    assert state == "done", result["status"]
    assert (result["width"], result["height"]) == (512, 512)
    assert result["clear"] > 0.2 and result["opaque"] > 0.2  # transparency, and a subject
    assert result["mask"] == [512, 512]
    assert result["status"].startswith("Done in")
    assert result["outside"] == []
