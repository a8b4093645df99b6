"""remove.bg's own client library (the npm package remove.bg, pinned in
tests/system/removebg_client/package.json) against real gunicorn.

The client has no setting for its address; drive.js loads it with its
API_ENDPOINT constant replaced by the local server's URL, nothing else.
`make test` installs it (`make removebg-client`: npm ci into the venv).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

from PIL import Image

from tests.helpers import DATA
from tests.processes import run
from tests.system.server import running_gunicorn

CLIENT = Path(__file__).parent / "removebg_client"
# Where `make removebg-client` installs the package: inside the venv, ignored by git.
NODE_MODULES = Path(sys.prefix) / "removebg-client" / "node_modules"
API_KEY = "test-key-for-the-client"


def test_remove_bgs_npm_client_removes_answers_json_and_reports_errors(tmp_path):
    node = shutil.which("node")
    assert node, "node is missing: run `make removebg-client` (make test does)"
    assert (NODE_MODULES / "remove.bg").is_dir(), "run `make removebg-client` (make test does)"
    photo = DATA / "astronaut.png"
    with running_gunicorn(tmp_path, API_KEY=API_KEY) as server:
        done = run([node, str(CLIENT / "drive.js"), f"http://127.0.0.1:{server.port}/v1.0/removebg",
                    API_KEY, str(photo), str(tmp_path)],
                   timeout=120, env=os.environ | {"NODE_PATH": str(NODE_MODULES)})
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)

    # A removal from a file: the client asks for JSON and writes result_b64 to the file.
    from_file = report["file"]["resolved"]
    with Image.open(tmp_path / "from-file.png") as cutout:
        assert cutout.mode == "RGBA" and cutout.width * cutout.height <= 250_000
        assert (from_file["resultWidth"], from_file["resultHeight"]) == (
            str(cutout.width), str(cutout.height))
    assert from_file["creditsCharged"] == "0"

    # From base64, cropped, on a colour: a JPEG (format auto, nothing transparent).
    from_base64 = report["base64"]["resolved"]
    with Image.open(tmp_path / "from-base64.jpg") as composite:
        assert composite.format == "JPEG" and composite.size < (500, 500)
    assert from_base64["base64Length"] > 1000

    # Errors reach the client as remove.bg's: the list of {title, code}.
    (wrong_key,) = report["wrongKey"]["rejected"]
    assert wrong_key["code"] == "auth_failed" and wrong_key["title"]
    (url,) = report["url"]["rejected"]
    assert url["code"] == "image_url_not_supported" and "outbound" in url["title"]
