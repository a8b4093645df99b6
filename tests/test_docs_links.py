"""The README and docs/ point at files that exist.

Every relative Markdown link in README.md and docs/*.md must name an existing
file or folder, and every file path they quote in backticks (`runtime/cache.py`,
`bench/results/2026-12-03-4.md`) must exist too, from the repository root or
from isnet_wsgi/: a module moved or a result file deleted fails here, not in
a reader's hands.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# [text](target) and [text](target "title"); images too.
_LINK = re.compile(r"\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
# A quoted path: letters, digits, dots, dashes, underscores and slashes,
# ending in one of the extensions the project's files have.
_QUOTED_PATH = re.compile(r"`([\w./-]+\.(?:py|md|c|toml|txt|json|yaml|yml|html))`")
# Built by `make model`, not committed: present only after a build.
_BUILT = {"models/isnet-general-tiny.onnx"}


def _relative_links(text: str) -> list[str]:
    targets = []
    for target in _LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # http:, https:, mailto:, or an anchor in the same file
        targets.append(target.split("#", 1)[0])
    return targets


def _exists(document: Path, path: str) -> bool:
    bases = (document.parent, ROOT, ROOT / "isnet_wsgi")
    return any((base / path).exists() for base in bases)


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_relative_link_points_at_a_file(document):
    text = document.read_text()
    missing = [target for target in _relative_links(text)
               if not (document.parent / target).exists()]
    assert not missing, f"{document.name} links to missing files: {missing}"


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_quoted_file_path_exists(document):
    text = document.read_text()
    quoted = {path for path in _QUOTED_PATH.findall(text) if "/" in path} - _BUILT
    missing = sorted(path for path in quoted if not _exists(document, path))
    assert not missing, f"{document.name} names files that do not exist: {missing}"


def test_the_links_are_found():
    # The pattern itself: a link with an anchor and one with a title.
    text = 'see [a](docs/memory.md#the-arena) and [b](../bench/README.md "b") and [c](https://x.y/)'
    assert _relative_links(text) == ["docs/memory.md", "../bench/README.md"]
