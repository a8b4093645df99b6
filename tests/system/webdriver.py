"""A minimal W3C WebDriver client (stdlib urllib) for Debian's chromedriver.

Only what the browser test needs: a session, navigation, finding an element,
sending a file path to it, running a script. Everything stays on loopback:
chromedriver listens on 127.0.0.1 and Chromium starts with the flags that
stop it reaching outside hosts (updates, sync, QUIC probes).
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from tests.processes import process_group
from tests.system.server import free_port

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
# The W3C name of the key that holds an element's id in every answer.
ELEMENT_KEY = "element-6066-11e4-a52e-4f735466cecf"
OFFLINE_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage")


class Browser:
    def __init__(self, base_url: str, session_id: str):
        self.base_url = base_url
        self.session_id = session_id

    def command(self, method: str, path: str, payload: dict | None = None):
        return _call(method, f"{self.base_url}/session/{self.session_id}{path}", payload)

    def open(self, url: str) -> None:
        self.command("POST", "/url", {"url": url})

    def find(self, css: str) -> str:
        found = self.command("POST", "/element", {"using": "css selector", "value": css})
        return found[ELEMENT_KEY]

    def send_file(self, css: str, path: Path) -> None:
        """What a person choosing a file does: chromedriver sets the input's file."""
        self.command("POST", f"/element/{self.find(css)}/value", {"text": str(path)})

    def run(self, script: str, *args):
        return self.command("POST", "/execute/sync", {"script": script, "args": list(args)})

    def wait_for(self, script: str, timeout_s: float):
        """Poll a script until it returns something truthy."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if value := self.run(script):
                return value
            time.sleep(0.2)
        raise AssertionError(f"timed out after {timeout_s} s waiting for: {script}")


def _call(method: str, url: str, payload: dict | None = None, timeout_s: float = 60):
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return json.loads(response.read())["value"]
    except urllib.error.HTTPError as error:
        raise AssertionError(f"WebDriver {method} {url}: {error.read()[:500]!r}") from None


@contextmanager
def headless_chromium(profile_dir: Path):
    """Start chromedriver and one headless Chromium session; stop both afterwards."""
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    # chromedriver starts Chromium and its helpers in the same group: all stop.
    with process_group([str(CHROMEDRIVER), f"--port={port}", "--allowed-ips=127.0.0.1"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as driver:
        _wait_ready(base_url, driver)
        capabilities = {"browserName": "chrome", "goog:chromeOptions": {
            "binary": str(CHROMIUM), "args": [*OFFLINE_FLAGS, f"--user-data-dir={profile_dir}"]}}
        session = _call("POST", f"{base_url}/session",
                        {"capabilities": {"alwaysMatch": capabilities}})
        browser = Browser(base_url, session["sessionId"])
        try:
            yield browser
        finally:
            _call("DELETE", f"{base_url}/session/{browser.session_id}")


def _wait_ready(base_url: str, driver: subprocess.Popen, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if driver.poll() is not None:
            raise AssertionError(f"chromedriver exited {driver.returncode}")
        try:
            if _call("GET", f"{base_url}/status", timeout_s=5)["ready"]:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"chromedriver was not ready within {timeout_s} s")
