"""Shared fixtures: the real model and the service built on it."""

from __future__ import annotations

import pytest
import webtest

from isnet_wsgi.config import Settings
from isnet_wsgi.service import Service, create_app
from tests.helpers import make_settings


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
