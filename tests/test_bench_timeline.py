"""bench.studies.timeline puts RSS samples on the nodes of onnxruntime's profile."""

from __future__ import annotations

import pytest

from bench.studies import timeline


def _node(name: str, ts_us: int, dur_us: int, op: str = "QLinearConv") -> dict:
    return {"cat": "Node", "name": name + "_kernel_time", "ts": ts_us, "dur": dur_us,
            "args": {"op_name": op, "output_size": "1024"}}


# Two runs: only the last one's nodes count. Times are in microseconds, as
# onnxruntime writes them, from the profiler's start.
PROFILE = [
    {"name": "model_run", "ts": 0, "dur": 50_000},
    _node("/old", 1_000, 10_000),
    {"name": "model_run", "ts": 100_000, "dur": 40_000},
    _node("/a", 100_000, 10_000),
    _node("/b", 110_000, 20_000),
    _node("/c", 130_000, 10_000),
    _node("/short", 137_500, 1),  # no sample falls in it, even with the slack
    {"cat": "Node", "name": "/a_fence_before", "ts": 100_000, "dur": 0, "args": {}},
]


def test_each_node_gets_the_highest_sample_taken_while_it_ran():
    started = 500.0  # perf_counter just before the sampled run
    samples = [(started + 0.002, 100.0), (started + 0.008, 120.0),  # /a
               (started + 0.015, 180.0), (started + 0.025, 150.0),  # /b
               (started + 0.0352, 110.0)]                          # /c
    nodes = timeline.node_rss(PROFILE, samples, started)
    assert [(node.name, node.rss_mb) for node in nodes] == [
        ("/a", 120.0), ("/b", 180.0), ("/c", 110.0)]
    assert nodes[1].start_s == pytest.approx(0.010)
    assert nodes[1].duration_s == pytest.approx(0.020)
    assert nodes[1].op == "QLinearConv" and nodes[1].output_bytes == 1024


def test_a_sample_within_the_slack_of_a_node_counts_for_it():
    started = 0.0
    samples = [(0.0102 + timeline.SLACK_S / 2, 90.0)]  # just past /a's end, inside /b
    names = [node.name for node in timeline.node_rss(PROFILE, samples, started)]
    assert names == ["/a", "/b"]


def test_steps_keep_the_nodes_where_rss_moved():
    nodes = [timeline.NodeRss(i / 10, 0.1, f"/n{i}", "Conv", 0, rss)
             for i, rss in enumerate([100.0, 101.0, 104.5, 104.0, 99.0, 130.0])]
    assert [node.name for node in timeline.steps(nodes, step_mb=3.0)] == ["/n0", "/n2", "/n4", "/n5"]


def test_a_profile_without_a_run_is_refused():
    with pytest.raises(ValueError):
        timeline.node_rss([_node("/a", 0, 1)], [], 0.0)
