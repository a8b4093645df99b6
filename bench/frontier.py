"""The memory/latency frontier: every live point (bench/configs.py) in a fresh process.

The machine is shared, and another job's load comes and goes by the minute,
so points are not timed one after another. They are measured in groups: the
reference (onnxruntime defaults, rembg's setting) and a few points, each in
its own fresh process, all loaded at once and then run in turn, A B C A B C,
over the same photos. A point's "time vs reference" is the ratio of medians
taken in the same minutes, which is what to trust; absolute seconds drift.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from bench.bare import BareSession, NotInstalled
from bench.configs import Config, by_name
from bench.stats import percentile

REFERENCE = "ort-defaults"
# Points alive at once besides the reference; each holds a session (~0.2-1 GB).
GROUP_SIZE = 5


def _open(points: list[Config], model: Path, failures: dict, log):
    sessions = []
    for config in points:
        try:
            sessions.append(BareSession(config, model))
        except (NotInstalled, RuntimeError) as error:
            failures[config.name] = str(error)
            log(f"  {config.name:<20} FAILED: {error}")
    return sessions


def _run_group(sessions: list[BareSession], tensor_paths: list[Path], runs: int) -> dict:
    """Warm-up once each, then `runs` turns of every session, rotating who goes first."""
    samples = {session.name: {"first": session.run(tensor_paths[0]), "runs": [],
                              "load_s": session.load_s, "hwm_load_mb": session.hwm_load_mb}
               for session in sessions}
    for turn in range(runs):
        shift = turn % len(sessions)
        for session in sessions[shift:] + sessions[:shift]:
            try:
                samples[session.name]["runs"].append(session.run(tensor_paths[turn % len(tensor_paths)]))
            except RuntimeError as error:  # e.g. an arena cap hit mid-run
                samples[session.name]["error"] = str(error)
    return samples


def _row(name: str, groups: list[dict], ratios: list[float]) -> dict:
    runs = [run for group in groups for run in group["runs"]]
    seconds = [run["seconds"] for run in runs]
    return {
        "name": name, "ok": True, "vs_reference": statistics.median(ratios) if ratios else None,
        "median_s": round(statistics.median(seconds), 3),
        "p95_s": round(percentile(seconds, 95), 3),
        "cpu_s": round(statistics.median(run["cpu_s"] for run in runs), 3),
        "first_s": round(statistics.median(g["first"]["seconds"] for g in groups), 3),
        "load_s": round(statistics.median(g["load_s"] for g in groups), 3),
        "hwm_load_mb": max(g["hwm_load_mb"] for g in groups),
        "hwm_mb": max(run["hwm_mb"] for run in runs),
        "rss_end_mb": runs[-1]["rss_mb"], "runs_s": seconds,
    }


def run(configs: list[Config], model: Path, tensors: Path, *, runs: int, log=print) -> list[dict]:
    tensor_paths = sorted(tensors.glob("*.npy"))
    reference = by_name(model)[REFERENCE]
    others = [config for config in configs if config.name != REFERENCE]
    groups = [others[i:i + GROUP_SIZE] for i in range(0, len(others), GROUP_SIZE)] or [[]]
    measured: dict[str, list[dict]] = {REFERENCE: []}
    ratios: dict[str, list[float]] = {REFERENCE: []}
    failures: dict[str, str] = {}
    for number, group in enumerate(groups, 1):
        log(f"  group {number}/{len(groups)}: {', '.join(c.name for c in [reference] + group)}")
        sessions = _open([reference] + group, model, failures, log)
        try:
            samples = _run_group(sessions, tensor_paths, runs)
        finally:
            for session in sessions:
                session.close()
        _collect(samples, measured, ratios, failures, log)
    rows = []
    for config in [reference] + others:
        if config.name in failures or not measured.get(config.name):
            rows.append({"name": config.name, "ok": False,
                         "error": failures.get(config.name, "no runs")})
        else:
            rows.append(_row(config.name, measured[config.name], ratios[config.name]))
    mark_frontier(rows)
    return rows


def _collect(samples: dict, measured: dict, ratios: dict, failures: dict, log) -> None:
    reference = samples.get(REFERENCE)
    ref_median = statistics.median(r["seconds"] for r in reference["runs"]) if reference else None
    for name, sample in samples.items():
        if "error" in sample or not sample["runs"]:
            failures[name] = sample.get("error", "no runs")
            log(f"  {name:<20} FAILED: {failures[name][:200]}")
            continue
        median = statistics.median(r["seconds"] for r in sample["runs"])
        measured.setdefault(name, []).append(sample)
        ratio = median / ref_median if ref_median else None
        if ratio is not None:
            ratios.setdefault(name, []).append(ratio)
        log(f"  {name:<20} median {median:.2f} s ({ratio or 0:.2f}x ref)  "
            f"peak {max(r['hwm_mb'] for r in sample['runs']):.0f} MB")


def mark_frontier(rows: list[dict]) -> None:
    """Pareto frontier on (time vs reference, peak RSS): no other point is both
    at least as fast and at least as small, and better in one."""
    good = [row for row in rows if row.get("ok") and row.get("vs_reference")]
    for row in good:
        row["pareto"] = not any(
            other["vs_reference"] <= row["vs_reference"] and other["hwm_mb"] <= row["hwm_mb"]
            and (other["vs_reference"], other["hwm_mb"]) != (row["vs_reference"], row["hwm_mb"])
            for other in good)
