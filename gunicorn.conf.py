"""gunicorn settings for isnet-wsgi: `gunicorn -c gunicorn.conf.py`.

Plain module-level assignments, grouped by section. Values that an operator
tunes come from the same environment variables as the app's own settings
(isnet_wsgi/config.py), so the two can never disagree.
"""

import sys

from isnet_wsgi.config import ConfigError, Settings

try:
    _settings = Settings.from_env()
except ConfigError as error:
    # One clear line instead of gunicorn's "Failed to read config file" traceback.
    sys.exit(f"Error: {error}")

# --- The application -------------------------------------------------------
# The WSGI callable. Importing it builds the app and opens + verifies the
# model file, once, in the master.
wsgi_app = "isnet_wsgi.wsgi:application"
# Load the app in the master before forking, so a recycled worker starts with
# the imports in memory (copy-on-write) and the model in the page cache.
preload_app = True

# --- Server socket ---------------------------------------------------------
bind = f"0.0.0.0:{_settings.port}"
# Connections the kernel queues while the single worker is busy with a request;
# between requests the worker takes them all into its pool (MAX_HELD_CONNECTIONS).
# Beyond this clients get "connection refused" (see deploy/README.md, "In front of it").
backlog = 64

# --- Worker processes ------------------------------------------------------
# One sync worker: inference uses every core through onnxruntime's own thread
# pool, so a second worker would only double the memory.
workers = 1
# gunicorn's sync worker, one request at a time, plus a pool that reads the
# waiting connections as their bytes arrive (a slow one gets its 408 there,
# without a turn; docs/slow-clients.md) and the API's JSON for gunicorn's errors.
worker_class = "isnet_wsgi.server.worker.BoundedSyncWorker"
# Seconds a request may run before the master kills and replaces the worker.
timeout = _settings.request_timeout_s
graceful_timeout = _settings.request_timeout_s
keepalive = 2
# Recycle the worker after this many requests (+ up to jitter) to bound any
# slow growth of the heap; 0 turns recycling off.
max_requests = _settings.max_requests
max_requests_jitter = _settings.max_requests_jitter
# The heartbeat file lives in RAM: container disks can stall the heartbeat.
worker_tmp_dir = "/dev/shm"

# --- Control ---------------------------------------------------------------
# gunicorn's control socket lives under $HOME, which a container's non-root
# user may not be able to write; the service has no use for it.
control_socket_disable = True

# --- Logging ---------------------------------------------------------------
# The app writes one JSON line per request to stdout (isnet_wsgi/web/monitoring.py),
# so gunicorn's own access log would only repeat it.
accesslog = None
errorlog = "-"
loglevel = "info"


# --- Hooks -----------------------------------------------------------------
def when_ready(server):
    """Say where the docs are once the socket listens: the first thing a new user needs."""
    server.log.info("isnet-wsgi is listening: open http://localhost:%s/ for the docs",
                    _settings.port)


def post_worker_init(worker):
    """Create the onnxruntime session in the worker, not the master.

    PERF: onnxruntime's intra-op thread pool does not survive fork(): a session
    created in the master ran ~1.7x slower in the forked worker.
    """
    def request_recycle():
        # The sync worker finishes the request in hand, then exits; the master
        # starts a fresh one. Used by the memory guard (MEMORY_LIMIT_MB).
        worker.alive = False

    worker.wsgi.start_worker(request_recycle)
    worker.log.info("worker %s: model session ready", worker.pid)
