"""Prometheus metrics, hand-written: counters, gauges and histograms in text format.

Per worker process, like every sync-worker app: a recycled worker starts its
counters again from zero, which Prometheus' rate() treats as a reset. The one
number that must outlive a worker, how many workers have started, lives in a
page of memory shared with the master (see ``SharedCounter``).
"""

from __future__ import annotations

import math
import mmap
import struct
import threading
from bisect import bisect_left

# Seconds. A 1024-px request takes ~1-4 s on 2 cores; the tail covers the timeout.
LATENCY_BUCKETS_S = (0.005, 0.025, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 10.0, 20.0, 60.0)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: tuple[str, ...], values: tuple[str, ...], extra: str = "") -> str:
    pairs = [f'{name}="{_escape(value)}"' for name, value in zip(names, values)]
    if extra:
        pairs.append(extra)
    return "{" + ",".join(pairs) + "}" if pairs else ""


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


class _Metric:
    kind = ""

    def __init__(self, name: str, help_text: str, labels: tuple[str, ...] = ()):
        self.name = name
        self.help_text = help_text
        self.label_names = labels
        self._lock = threading.Lock()

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help_text}", f"# TYPE {self.name} {self.kind}"]

    def labelled_lines(self, values: dict[tuple[str, ...], float]) -> list[str]:
        """The header, then one sample per label values, in a stable order."""
        return self.header() + [
            f"{self.name}{_labels(self.label_names, key)} {_number(value)}"
            for key, value in sorted(values.items())]


class Counter(_Metric):
    kind = "counter"

    def __init__(self, name, help_text, labels=()):
        super().__init__(name, help_text, labels)
        self._values: dict[tuple[str, ...], float] = {}

    def inc(self, *label_values: str, amount: float = 1.0) -> None:
        with self._lock:
            self._values[label_values] = self._values.get(label_values, 0.0) + amount

    def total(self) -> float:
        return sum(self._values.values())

    def lines(self) -> list[str]:
        return self.labelled_lines(self._values)


class CounterView(_Metric):
    """A counter kept elsewhere, read when scraped: one source of truth.

    ``read`` returns {label values: count}, e.g. {("hit",): 3, ("miss",): 5}.
    """

    kind = "counter"

    def __init__(self, name, help_text, labels, read):
        super().__init__(name, help_text, labels)
        self._read = read

    def lines(self) -> list[str]:
        return self.labelled_lines(self._read())


class Gauge(_Metric):
    """A value read when scraped, from a function."""

    kind = "gauge"

    def __init__(self, name, help_text, read):
        super().__init__(name, help_text)
        self._read = read

    def lines(self) -> list[str]:
        return self.header() + [f"{self.name} {_number(self._read())}"]


class Histogram(_Metric):
    kind = "histogram"

    def __init__(self, name, help_text, labels=(), buckets=LATENCY_BUCKETS_S):
        super().__init__(name, help_text, labels)
        self.buckets = tuple(sorted(buckets))
        # label values -> (count per bucket, +Inf included last; sum)
        self._series: dict[tuple[str, ...], tuple[list[int], list[float]]] = {}

    def observe(self, value: float, *label_values: str) -> None:
        with self._lock:
            counts, total = self._series.setdefault(
                label_values, ([0] * (len(self.buckets) + 1), [0.0]))
            counts[bisect_left(self.buckets, value)] += 1
            total[0] += value

    def lines(self) -> list[str]:
        lines = self.header()
        for key, (counts, total) in sorted(self._series.items()):
            cumulative = 0
            for bound, count in zip(self.buckets + (math.inf,), counts):
                cumulative += count
                le = f'le="{"+Inf" if math.isinf(bound) else repr(float(bound))}"'
                lines.append(f"{self.name}_bucket{_labels(self.label_names, key, le)} {cumulative}")
            lines.append(f"{self.name}_sum{_labels(self.label_names, key)} {_number(total[0])}")
            lines.append(f"{self.name}_count{_labels(self.label_names, key)} {cumulative}")
        return lines


class SharedCounter:
    """A counter in an anonymous shared page, made before fork.

    Every process forked from the one that made it (gunicorn's workers, from
    the master under preload_app) sees and increments the same number.
    """

    def __init__(self):
        self._page = mmap.mmap(-1, 8, flags=mmap.MAP_SHARED)

    def inc(self) -> int:
        # NOTE: one sync worker at a time increments it; no lock is needed.
        value = struct.unpack_from("q", self._page)[0] + 1
        struct.pack_into("q", self._page, 0, value)
        return value

    @property
    def value(self) -> int:
        return struct.unpack_from("q", self._page)[0]


class Registry:
    def __init__(self):
        self._metrics: list[_Metric] = []

    def add(self, metric):
        self._metrics.append(metric)
        return metric

    def exposition(self) -> bytes:
        """The Prometheus text format (version 0.0.4)."""
        lines = [line for metric in self._metrics for line in metric.lines()]
        return ("\n".join(lines) + "\n").encode()
