"""RSS from /proc and glibc's malloc knobs."""

import os

from isnet_wsgi import memory


def test_rss_and_peak_are_read_from_proc():
    rss, peak = memory.rss_mb(), memory.peak_rss_mb()
    assert 5 < rss <= peak < 100_000
    assert memory.rss_mb(os.getpid()) > 5


def test_peak_grows_with_touched_memory_and_can_be_reset():
    assert memory.reset_peak_rss()
    before = memory.peak_rss_mb()
    block = bytearray(64 * 1024 * 1024)  # zero-filled: every page is touched
    assert memory.peak_rss_mb() >= before + 60
    del block
    memory.trim()
    assert memory.reset_peak_rss()
    assert memory.peak_rss_mb() < before + 60


def test_malloc_knobs_are_set_on_glibc():
    assert memory.set_mmap_threshold(64 * 1024)
    assert memory.set_trim_threshold(128 * 1024)
    assert memory.trim() in (True, False)  # whether anything was returned
    assert not memory.set_mmap_threshold(0)
