"""Helper threads: results in order, no work left running, and a forked child gets its own."""

import os
import threading
import time

import pytest

from isnet_wsgi.runtime import parallel


def test_results_come_in_the_items_order_from_several_threads():
    names = parallel.map_in_threads(lambda item: (item, threading.current_thread().name),
                                    [0, 1, 2, 3])
    assert [item for item, _ in names] == [0, 1, 2, 3]
    assert names[0][1] == threading.current_thread().name
    assert all(name.startswith("isnet-helper") for _, name in names[1:])


def test_a_failure_returns_only_once_the_others_have_finished():
    finished = []

    def work(item):
        if item == 0:
            raise ValueError("first")
        time.sleep(0.2)
        finished.append(item)

    with pytest.raises(ValueError, match="first"):
        parallel.map_in_threads(work, [0, 1, 2])
    assert sorted(finished) == [1, 2]


def test_a_forked_child_starts_helpers_of_its_own():
    parallel.map_in_threads(abs, [-1, -2])  # the parent's helpers exist
    pid = os.fork()
    if pid == 0:  # the child: the parent's helper threads did not come with it
        code = 2
        try:
            code = 0 if parallel.map_in_threads(abs, [-1, -2, -3]) == [1, 2, 3] else 1
        finally:
            os._exit(code)
    deadline = time.monotonic() + 20
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    if done[0] == 0:  # waiting on helpers that were never started there
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        pytest.fail("the child's helpers never ran")
    assert os.waitstatus_to_exitcode(done[1]) == 0
