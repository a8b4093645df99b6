"""The result cache: LRU bounded in bytes, and how the API uses it."""

from __future__ import annotations

import dataclasses

import webtest

from isnet_wsgi.runtime.cache import OffHeapBytes, ResultCache
from isnet_wsgi.service import Service
from tests.helpers import encode_image, make_settings, open_image, photo_bytes
from tests.test_api import remove


def test_lru_evicts_the_least_recently_used_to_stay_within_its_bytes():
    cache = ResultCache(10)
    cache.put("a", b"xxxx")
    cache.put("b", b"yyyy")
    assert cache.get("a") == b"xxxx"  # now "b" is the least recently used
    cache.put("c", b"zzzz")
    assert cache.get("b") is None and cache.get("a") == b"xxxx" and cache.get("c") == b"zzzz"
    assert cache.bytes == 8 and len(cache) == 2
    assert (cache.hits, cache.misses) == (3, 1)


def test_an_entry_larger_than_the_budget_is_not_stored_and_zero_is_off():
    cache = ResultCache(4)
    cache.put("big", b"12345")
    assert cache.get("big") is None and cache.bytes == 0
    off = ResultCache(0)
    off.put("a", b"")
    assert not off.enabled and off.get("a") is None


def test_replacing_a_key_counts_its_bytes_once_and_clear_reports_what_went():
    cache = ResultCache(100)
    cache.put("a", b"1234")
    cache.put("a", b"123456")
    assert cache.bytes == 6
    assert cache.clear() == {"entries": 1, "bytes": 6}
    assert cache.bytes == 0 and len(cache) == 0


def test_off_heap_bytes_give_back_what_they_were_given():
    for data in (b"", b"x", bytes(range(256)) * 4099):
        kept = OffHeapBytes(data)
        assert len(kept) == len(data) and kept.to_bytes() == data


def small_unique_photo(seed: int) -> bytes:
    """A photo no other test sends, so its first request is a miss."""
    image = open_image(photo_bytes("camera.png")).resize((96 + seed, 96))
    return encode_image(image, "PNG")


def test_a_repeated_request_is_a_hit_with_the_same_bytes_and_counted(service):
    client = webtest.TestApp(Service(service.settings, service.segmenter))
    data = small_unique_photo(1)
    first = remove(client, data, "a.png")
    second = remove(client, data, "b.png")  # another name: the same bytes, options
    assert first.headers["X-Cache"] == "miss" and second.headers["X-Cache"] == "hit"
    assert second.body == first.body
    assert second.headers["Content-Disposition"] == 'attachment; filename="nobg_b.png"'
    other_options = remove(client, data, "a.png", params={"format": "webp"})
    assert other_options.headers["X-Cache"] == "miss"
    cache = client.get("/api/bg/status").json["cache"]
    assert cache["hits"] == 1 and cache["misses"] == 2 and cache["entries"] == 2
    assert cache["bytes"] == len(first.body) + len(other_options.body)
    assert cache["max_bytes"] == 8 * 1024 * 1024
    metrics = client.get("/metrics").text
    assert 'isnet_cache_requests_total{result="hit"} 1' in metrics
    assert 'isnet_cache_requests_total{result="miss"} 2' in metrics

    cleared = client.post("/api/bg/clear_cache").json["cleared"]["results"]
    assert cleared == {"entries": 2, "bytes": cache["bytes"]}
    assert remove(client, data, "a.png").headers["X-Cache"] == "miss"


def test_cache_mb_zero_turns_the_cache_off(service):
    settings = dataclasses.replace(service.settings, cache_mb=0)
    client = webtest.TestApp(Service(settings, service.segmenter))
    data = small_unique_photo(2)
    for _ in range(2):
        response = remove(client, data, "a.png")
        assert "X-Cache" not in response.headers
    assert client.get("/api/bg/status").json["cache"]["enabled"] is False
    assert make_settings(cache_mb=0).cache_bytes == 0
