"""The service makes no network call of its own: nothing but loopback, ever."""

import re
import sys

from tests import processes
from tests.system.server import ROOT

_ADDRESS = re.compile(r'sa_family=AF_INET6?, .*?(?:inet_addr\("([^"]+)"\)|inet_pton\(AF_INET6, "([^"]+)")')
_LOOPBACK = re.compile(r"^(127\.|::1$|::ffff:127\.)")


def outbound_calls(trace: str) -> list[str]:
    """strace lines that address an IPv4/IPv6 peer other than loopback."""
    calls = []
    for line in trace.splitlines():
        for match in _ADDRESS.finditer(line):
            address = match.group(1) or match.group(2)
            if not _LOOPBACK.match(address):
                calls.append(line)
    return calls


def test_outbound_calls_are_recognised_in_strace_lines():
    trace = "\n".join([
        '10 connect(5, {sa_family=AF_INET, sin_port=htons(53), '
        'sin_addr=inet_addr("10.255.255.53")}, 16) = -1 ENETUNREACH',
        '10 connect(6, {sa_family=AF_INET6, sin6_port=htons(443), sin6_flowinfo=htonl(0), '
        'inet_pton(AF_INET6, "2001:db8::1", &sin6_addr), sin6_scope_id=0}, 28) = -1',
        '11 connect(7, {sa_family=AF_INET, sin_port=htons(5000), '
        'sin_addr=inet_addr("127.0.0.1")}, 16) = 0',
        '11 sendto(9, "HTTP/1.1 200 OK", 15, 0, NULL, 0) = 15',
        '12 connect(3, {sa_family=AF_UNIX, sun_path="/var/run/nscd/socket"}, 110) = -1'])
    assert [line.split()[0] for line in outbound_calls(trace)] == ["10", "10"]


def test_the_harness_catches_a_real_lookup_in_the_namespace(tmp_path):
    # Positive control: the same unshare + strace set-up sees a DNS lookup
    # (it fails inside the namespace, but the attempt is what we look for).
    trace_log = tmp_path / "control.log"
    lookup = "import socket\ntry: socket.getaddrinfo('example.invalid', 80)\nexcept OSError: pass"
    script = (f"ip link set lo up && exec strace -f -qq -e trace=connect,sendto,sendmsg "
              f"-o {trace_log} {sys.executable} -c \"{lookup}\"")
    result = processes.run(["unshare", "--net", "sh", "-c", script], timeout=60)
    assert result.returncode == 0, result.stderr
    assert outbound_calls(trace_log.read_text())


def test_the_service_makes_no_network_call_of_its_own(tmp_path):
    trace_log = tmp_path / "strace.log"
    script = (f"ip link set lo up && exec {sys.executable} -m tests.system.offline_driver "
              f"{trace_log} {tmp_path}")
    result = processes.run(["unshare", "--net", "sh", "-c", script], cwd=ROOT, timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "served" in result.stdout
    trace = trace_log.read_text()
    assert "sendto(" in trace  # the tracer saw the worker answer requests
    assert outbound_calls(trace) == []
