"""The system tests' fixture: one real gunicorn per test module."""

import pytest

from tests.system.server import running_gunicorn


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with running_gunicorn(tmp_path_factory.mktemp("gunicorn")) as running:
        yield running
