"""onnxruntime's session options for the service, and for the bench that
starts from them. Imports onnxruntime and nothing else of the service's, so a
bench child measuring a bare session loads no more than it needs."""

from __future__ import annotations

import os
from dataclasses import dataclass

# NOTE: onnxruntime was seen resolving a telemetry host after import; the
# service makes no network call of its own, so switch that off first.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
import onnxruntime as ort  # noqa: E402


@dataclass(frozen=True)
class SessionOptions:
    intra_op_threads: int = 2
    cpu_arena: bool = False
    memory_pattern: bool = False
    mmap_threshold_kb: int = 64
    # The service always stops spinning after a run (below); a bench point
    # may measure without it.
    spin_stop: bool = True


# PERF: onnxruntime's blocked (NCHWc) layout pads the fp32 head's 1-channel
# outputs to 16 channels: the final upsample and sigmoid made 64 MB tensors
# instead of 4 MB. Without it (the rest of the graph is uint8 and does not
# use the layout): bare peak 266 -> 262 MB, 1.22x -> 1.19x of onnxruntime's
# defaults in the same minutes, masks equal within 2.4e-7.
DISABLED_OPTIMIZERS = ["NchwcTransformer"]


def session_options(options: SessionOptions) -> ort.SessionOptions:
    """onnxruntime's options for the service's session (and the bench's, which
    starts from them)."""
    made = ort.SessionOptions()
    made.intra_op_num_threads = options.intra_op_threads
    made.inter_op_num_threads = 1
    made.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    made.enable_cpu_mem_arena = options.cpu_arena
    made.enable_mem_pattern = options.memory_pattern
    made.log_severity_level = 3
    # PERF: the intra-op threads spin between kernels (fast), but not after
    # the run, when this process decodes and encodes on the same cores:
    # 85-89 ms of service overhead per 1024-px request instead of 97-101.
    if options.spin_stop:
        made.add_session_config_entry("session.force_spinning_stop", "1")
    return made
