"""The suite's own guard: a process a test leaves behind is found and named."""

import subprocess
import sys
import time
import uuid

from tests import processes


def test_a_process_left_running_is_found_and_one_stopped_is_not(monkeypatch):
    session_id = uuid.uuid4().hex
    monkeypatch.setenv(processes.SESSION_VARIABLE, session_id)
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    stray = subprocess.Popen(sleeper)
    try:
        with processes.process_group(sleeper) as stopped:
            assert _found_within(session_id, {stray.pid, stopped.pid}, timeout_s=10)
        assert set(processes.leftovers(session_id)) == {stray.pid}
    finally:
        stray.kill()
        stray.wait()
    assert processes.leftovers(session_id) == {}


def _found_within(session_id: str, pids: set[int], timeout_s: float) -> bool:
    # NOTE: a child shows the session's variable in /proc/PID/environ only once
    # it has exec'd; until then it shows the parent's start-up environment.
    deadline = time.monotonic() + timeout_s
    while set(processes.leftovers(session_id)) != pids:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_stopping_a_group_stops_the_children_its_leader_started(monkeypatch):
    # The offline test's shape: a shell whose child would ignore the
    # shell's own death (the master under strace did).
    session_id = uuid.uuid4().hex
    monkeypatch.setenv(processes.SESSION_VARIABLE, session_id)
    with processes.process_group(["sh", "-c", "sleep 60 & sleep 60 & wait"]):
        for _ in range(50):
            if len(processes.leftovers(session_id)) == 3:
                break
            subprocess.run(["sleep", "0.05"])
        assert len(processes.leftovers(session_id)) == 3
    assert processes.leftovers(session_id) == {}
