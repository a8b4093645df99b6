"""The router and the error-to-response mapping, on handlers made in the test."""

import io
import json

import webtest

from isnet_wsgi.web.app import Router, WSGIApp
from isnet_wsgi.web.errors import BadRequest
from isnet_wsgi.web.response import Response


def make_client(**handlers):
    router = Router()
    for name, handler in handlers.items():
        method, _, path = name.partition("_")
        router.add(method.upper(), "/" + path, handler)
    app = WSGIApp(router)
    return app, webtest.TestApp(app)


def test_routes_by_exact_path_and_method():
    _, client = make_client(get_a=lambda r: Response(b"got a"),
                            post_a=lambda r: Response(b"posted a"))
    assert client.get("/a").body == b"got a"
    assert client.post("/a").body == b"posted a"
    assert client.get("/a/", status=404).json["error"] == "not_found"


def test_a_raised_http_error_is_its_json_response():
    def refuse(request):
        raise BadRequest("no thanks", code="refused")
    _, client = make_client(get_x=refuse)
    response = client.get("/x", status=400)
    assert response.json == {"error": "refused", "message": "no thanks"}


def test_a_bug_is_a_plain_500_and_its_traceback_is_logged():
    def broken(request):
        raise ZeroDivisionError("oops")
    app, _ = make_client(get_x=broken)
    errors = io.StringIO()
    started = []
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/x", "wsgi.errors": errors}
    body = b"".join(app(environ, lambda status, headers: started.append(status)))
    assert started == ["500 Internal Server Error"]
    assert json.loads(body)["error"] == "internal_error"
    assert b"oops" not in body
    assert errors.getvalue().count("ZeroDivisionError: oops") == 1


def test_memory_error_is_never_swallowed():
    def hungry(request):
        raise MemoryError
    app, _ = make_client(get_x=hungry)
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/x"}
    try:
        app(environ, lambda *a: None)
    except MemoryError:
        return
    raise AssertionError("MemoryError was swallowed")


def test_after_response_callbacks_run_once_the_body_is_sent():
    seen = []
    app, client = make_client(get_x=lambda r: Response(b"ok", status=201))
    app.after_response.append(lambda request, response, seconds: seen.append(
        (request.path, response.status, seconds >= 0)))
    client.get("/x", status=201)
    assert seen == [("/x", 201, True)]
