"""Metrics in Prometheus format, JSON request logs, request ids, the memory guard."""

import dataclasses
import io
import json

import pytest
import webtest
from prometheus_client.parser import text_string_to_metric_families

from isnet_wsgi.runtime.metrics import Counter, Histogram, Registry
from isnet_wsgi.service import Service
from isnet_wsgi.web.monitoring import MemoryGuard
from tests.helpers import make_settings, photo_bytes


@pytest.fixture
def logged(service):
    """A service sharing the started model, writing its logs to a buffer.

    Its memory guard's limit is far above the test process: this process is
    the whole test session (earlier tests' full-resolution images included),
    not a worker, and a guard's warning would be a second log line the
    request did not cause. The guard has tests of its own, below.
    """
    log = io.StringIO()
    settings = dataclasses.replace(service.settings, memory_limit_mb=1_000_000)
    return webtest.TestApp(Service(settings, service.segmenter, log=log)), log


def families(text: str) -> dict:
    return {family.name: family for family in text_string_to_metric_families(text)}


def test_metrics_parse_as_prometheus_text_and_count_requests(logged):
    client, _ = logged
    client.get("/api/bg/health")
    client.get("/no/such/path", status=404)
    client.post("/api/bg/remove", upload_files=[("file", "c.png", photo_bytes("camera.png"))])
    response = client.get("/metrics")
    assert response.content_type == "text/plain"
    metrics = families(response.text)
    requests = {(s.labels["route"], s.labels["method"], s.labels["status"]): s.value
                for s in metrics["isnet_requests"].samples}
    assert requests[("/api/bg/health", "GET", "200")] == 1
    assert requests[("other", "GET", "404")] == 1
    assert requests[("/api/bg/remove", "POST", "200")] == 1
    inference = {s.name: s.value for s in metrics["isnet_inference_seconds"].samples
                 if s.name.endswith(("_count", "_sum"))}
    assert inference["isnet_inference_seconds_count"] == 1
    assert inference["isnet_inference_seconds_sum"] > 0
    for name in ("isnet_rss_bytes", "isnet_peak_rss_bytes", "isnet_model_load_seconds",
                 "isnet_worker_recycles_total", "isnet_request_duration_seconds"):
        assert name in metrics or name.removesuffix("_total") in metrics


def test_histogram_buckets_are_cumulative_and_end_in_inf():
    registry = Registry()
    histogram = registry.add(Histogram("t_seconds", "test", ("route",), buckets=(0.1, 1.0)))
    for value in (0.05, 0.1, 0.5, 5.0):
        histogram.observe(value, 'a"b\\c')
    samples = families(registry.exposition().decode())["t_seconds"].samples
    buckets = [(s.labels["le"], s.value) for s in samples if s.name == "t_seconds_bucket"]
    assert buckets == [("0.1", 2), ("1.0", 3), ("+Inf", 4)]
    assert samples[0].labels["route"] == 'a"b\\c'


def test_counter_label_values_are_escaped():
    registry = Registry()
    counter = registry.add(Counter("c_total", "test", ("path",)))
    counter.inc("line\nbreak")
    sample = families(registry.exposition().decode())["c"].samples[0]
    assert sample.labels["path"] == "line\nbreak" and sample.value == 1


def test_one_json_log_line_per_request_with_its_id(logged):
    client, log = logged
    response = client.get("/api/bg/status", headers={"X-Request-ID": "abc-123"})
    assert response.headers["X-Request-ID"] == "abc-123"
    lines = log.getvalue().splitlines()
    assert len(lines) == 1
    entry = json.loads(lines[0])
    assert entry["request_id"] == "abc-123"
    assert entry["method"] == "GET" and entry["path"] == "/api/bg/status"
    assert entry["status"] == 200 and entry["bytes"] == len(response.body)
    assert entry["ms"] >= 0


@pytest.mark.parametrize("given", ["", "bad id with spaces", "x" * 200, "a\r\nb"])
def test_an_unsafe_request_id_is_replaced_by_a_fresh_one(logged, given):
    client, log = logged
    response = client.get("/api/bg/health", headers={"X-Request-ID": given} if given else {})
    request_id = response.headers["X-Request-ID"]
    assert request_id != given and len(request_id) == 32 and request_id.isalnum()
    assert json.loads(log.getvalue())["request_id"] == request_id


def test_memory_guard_recycles_the_worker_once_when_over_the_limit(service):
    log = io.StringIO()
    app = Service(make_settings(memory_limit_mb=64), service.segmenter, log=log)
    recycles = []
    app.memory_guard.request_recycle = lambda: recycles.append(True)
    client = webtest.TestApp(app)
    health = client.get("/api/bg/health").json
    assert health["status"] == "degraded" and "MEMORY_LIMIT_MB" in health["reason"]
    client.get("/api/bg/health")
    assert recycles == [True]
    assert any(json.loads(line)["event"] == "memory_recycle" for line in log.getvalue().splitlines())


def test_memory_guard_does_nothing_under_the_limit():
    guard = MemoryGuard(limit_mb=1_000_000)
    guard.request_recycle = lambda: pytest.fail("recycled under the limit")
    guard.after_response(None, None, 0.0)
    assert not guard.recycle_requested


# webtest's lint warns of each unknown method: here they are the point.
@pytest.mark.filterwarnings("ignore:Unknown REQUEST_METHOD")
def test_unknown_methods_share_one_label_so_the_series_stay_bounded(logged):
    client, _ = logged
    for i in range(50):
        client.request("/api/bg/health", method=f"JUNK{i}", status=405)
    client.request("/api/bg/health", method="BREW", status=405)
    client.request("/api/bg/health", method="DELETE", status=405)
    samples = families(client.get("/metrics").text)["isnet_requests"].samples
    methods = {s.labels["method"]: s.value for s in samples if s.labels["status"] == "405"}
    assert methods == {"other": 51, "DELETE": 1}
