"""gunicorn.conf.py, plus per-step timers in the worker (bench/breakdown.py).

`gunicorn -c bench/breakdown_gunicorn.py`: the service's own configuration,
run unchanged; after the worker has started its session, the request path's
steps are wrapped with timers (bench/breakdown.py, ``instrument``) that
append one JSON line per request to $BREAKDOWN_LOG.
"""

import os
from pathlib import Path

# The checkout under test (a git worktree, say), else this one.
_config = Path(os.environ.get("BREAKDOWN_CHECKOUT", Path(__file__).resolve().parent.parent),
               "gunicorn.conf.py")
exec(compile(_config.read_text(), str(_config), "exec"))  # noqa: S102  (our own file)

_service_post_worker_init = post_worker_init  # noqa: F821  (defined by the exec above)


def post_worker_init(worker):  # noqa: F811
    _service_post_worker_init(worker)
    # NOTE: by file, not `from bench import`: the checkout under test has a
    # bench package of its own, first on the path, perhaps without this module.
    import importlib.util  # noqa: PLC0415  (in the worker, after fork)
    spec = importlib.util.spec_from_file_location(
        "bench_breakdown", Path(__file__).resolve().parent / "breakdown.py")
    breakdown = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(breakdown)
    breakdown.instrument(os.environ["BREAKDOWN_LOG"], worker)
