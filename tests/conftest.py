"""Shared fixtures: the real model and the service built on it."""

from __future__ import annotations

import os
import signal
import uuid

import hypothesis
import pytest
import webtest

from isnet_wsgi.config import Settings
from isnet_wsgi.service import Service, create_app
from tests import processes
from tests.helpers import make_settings

# `make test` judges the code, not the dice: the property tests draw the same
# examples every run. `make fuzz` draws fresh ones (HYPOTHESIS_PROFILE=fuzz).
hypothesis.settings.register_profile("repeatable", derandomize=True, database=None)
hypothesis.settings.register_profile("fuzz", derandomize=False)
hypothesis.settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))


@pytest.fixture(scope="session", autouse=True)
def nothing_outlives_the_tests():
    """Fail the run if any process the tests started is still alive at the end.

    Every child inherits the session's id in its environment, so a server a
    test forgot (or a tracer's, a shell's child) is found whoever started it;
    it is killed, and the run fails naming it.
    """
    session_id = uuid.uuid4().hex
    os.environ[processes.SESSION_VARIABLE] = session_id
    yield
    left = processes.leftovers(session_id)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert not left, f"processes started by the tests outlived them: {left}"


@pytest.fixture(scope="session")
def settings() -> Settings:
    return make_settings()


@pytest.fixture(scope="session")
def service(settings) -> Service:
    """The service on the real model, with its session started as in a worker."""
    app = create_app(settings)
    app.start_worker()
    return app


@pytest.fixture
def client(service) -> webtest.TestApp:
    return webtest.TestApp(service)
