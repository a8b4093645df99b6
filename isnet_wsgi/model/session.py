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
    # One arena for every onnxruntime buffer, kept between runs, its first
    # region this size (shared_arena below); 0 is none: each run maps its
    # memory afresh and gives it back. The service sets it from ORT_ARENA_MB
    # where the container has room (isnet_wsgi.model.arena_mb).
    arena_mb: int = 0
    memory_pattern: bool = False
    mmap_threshold_kb: int = 64
    # Once the session is made, the heap glibc keeps for requests' buffers
    # (isnet_wsgi.memory.keep_heap), MiB; 0 is none. With the arena only
    # (isnet_wsgi.model.request_heap_mb).
    request_heap_mb: int = 0
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
    made.enable_cpu_mem_arena = options.cpu_arena or options.arena_mb > 0
    if options.arena_mb > 0:
        shared_arena(options.arena_mb)
        made.add_session_config_entry("session.use_env_allocators", "1")
    made.enable_mem_pattern = options.memory_pattern
    # PERF: onnxruntime's planner hands a dead tensor's buffer to a later
    # tensor of the same size, which keeps the buffer alive in between. In
    # the arena that is fragmentation: off, the worker's peak after a 1024-px
    # request was 271 -> 243 MB at the same latency (0.694 vs 0.703 s, same
    # run). Without an arena the reuse saves fresh pages: off there, 18 MB
    # less for 1.19x the latency.
    made.enable_mem_reuse = options.arena_mb == 0
    made.log_severity_level = 3
    # PERF: the intra-op threads spin between kernels (fast), but not after
    # the run, when this process decodes and encodes on the same cores:
    # 85-89 ms of service overhead per 1024-px request instead of 97-101.
    if options.spin_stop:
        made.add_session_config_entry("session.force_spinning_stop", "1")
    return made


_registered_arena_mb: int | None = None


def shared_arena(initial_mb: int) -> None:
    """Register this process's onnxruntime CPU arena: its first region
    ``initial_mb`` MiB, grown by doubling only if a run ever needs more.

    PERF: without an arena each 1024-px run maps ~590 MB afresh (~50,000
    page faults); onnxruntime's own arena keeps it all but fragments to
    ~400 MB. One region that holds a whole run is as fast as the own arena;
    with the planner's buffer reuse off (session_options) it holds ~100 MB
    after a run, and the worker peaks where it does without an arena. Only
    a shared ("environment") arena takes these settings from Python;
    kSameAsRequested ignores the first size (345 MB). 128 and 160 MiB
    first regions peaked higher (250, 269 MB), 256 MiB no lower (244 MB).
    Pages of the region a run never touches cost nothing.

    Once per process (onnxruntime keeps one per device); a second call with
    another size is refused, since sessions would silently share the first.
    """
    global _registered_arena_mb
    if _registered_arena_mb == initial_mb:
        return
    if _registered_arena_mb is not None:
        raise ValueError(f"this process's arena is already {_registered_arena_mb} MiB")
    memory_info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR,
                                    0, ort.OrtMemType.DEFAULT)
    ort.create_and_register_allocator(memory_info, ort.OrtArenaCfg({
        "arena_extend_strategy": 0,  # kNextPowerOfTwo
        "initial_chunk_size_bytes": initial_mb << 20,
        "max_dead_bytes_per_chunk": 1 << 20,
    }))
    _registered_arena_mb = initial_mb
