"""Order statistics shared by the child processes and the reports (no imports)."""

from __future__ import annotations


def percentile(values, percent: float) -> float:
    """Nearest-rank percentile: with 4 values, p95 is the largest."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * percent // 100))
    return ordered[int(rank) - 1]
