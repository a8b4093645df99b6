"""gunicorn's sync worker, with a bounded share for each client and JSON errors.

Still one sync worker (``worker_class`` in gunicorn.conf.py names this one):
it serves one request at a time, and adds four things to gunicorn's own.

- The connections it is not serving wait in a pool (connections.py) that
  reads them all as their bytes arrive and never waits on one: the worker
  serves the next whole request, and a slow client times out in the pool
  without taking a turn.
- Time limits on the connection it serves (client_limits.py): a body that
  streams slowly, or an answer read slowly, gets a 408 or is dropped.
- Errors gunicorn answers itself, before the app sees a request (malformed
  framing, a request line or headers over its limits, an odd ``Expect``, an
  HTTP version it does not speak), are the API's JSON, not gunicorn's HTML.
- A HTTP/1.1 request without exactly one ``Host`` is refused (RFC 9112 3.2).
"""

from __future__ import annotations

from gunicorn.workers.sync import SyncWorker

from ..web.errors import MissingHost, http_error
from .client_limits import ClientLimits, ClientTooSlowToRead, PacedSocket
from .connections import ConnectionPool, PoolLimits
from .framing import raw_response

# The longest the worker waits in one poll: it tells the master it lives
# (gunicorn's heartbeat) at least this often.
_POLL_S = 1.0


class BoundedSyncWorker(SyncWorker):
    """gunicorn's SyncWorker with a pool of waiting connections, client time
    limits and JSON error answers."""

    def load_wsgi(self):
        super().load_wsgi()
        # The app's settings (loaded once in the master) say the limits.
        settings = self.wsgi.settings
        self.client_limits = ClientLimits.from_settings(settings)
        self.pool = ConnectionPool(self.client_limits, PoolLimits.from_settings(settings),
                                   log=self.log.warning)

    def run(self):
        """Serve the next whole request; between requests, read the others.

        On exit (SIGTERM, ``max_requests``, the memory guard) it takes no new
        connection, serves those whose requests are whole or become whole
        within the head timeout, and tells the rest to come back (503 with
        Retry-After). The request in hand is always finished first.
        """
        pool = self.pool
        for listener in self.sockets:
            pool.watch(listener)
        pool.watch_wakeup(self.PIPE[0])
        leave_by = None
        while leave_by is None or (len(pool) and pool.clock() < leave_by):
            self.notify()
            if not self.alive and leave_by is None:
                pool.stop_accepting()
                leave_by = pool.clock() + self.client_limits.head_timeout_s
            held = pool.take()
            if held is not None:
                self.handle(held.listener, held, held.addr)
                pool.poll(0)  # what arrived meanwhile, before the next turn
                continue
            if not self.is_parent_alive():
                break
            pool.poll(_POLL_S)
        pool.close_all()

    def handle(self, listener, held, addr):
        client = PacedSocket(held.sock, self.client_limits, buffered=held.data,
                             connected_at=held.connected_at, on_close=self.pool.linger)
        held.data = bytearray()  # the client's reads let go of it, once read through
        super().handle(listener, client, addr)

    def handle_request(self, listener, req, client, addr):
        client.start_body()
        if req.version >= (1, 1):
            hosts = sum(1 for name, _ in req.headers if name.upper() == "HOST")
            if hosts != 1:
                raise MissingHost(f"{hosts} Host headers")
        try:
            super().handle_request(listener, req, client, addr)
        except ClientTooSlowToRead as error:
            self.log.warning("Dropped a client from ip=%s: %s", (addr or ("",))[0], error)
            raise
        # NOTE: an early answer (413 for a declared size, 401, 404) leaves the
        # body unread; closing then would make the kernel reset the connection,
        # and a client still sending would never read the answer. The pool
        # lingers on the socket once gunicorn closes it (nginx's lingering_close).

    def handle_error(self, req, client, addr, exc):
        # web/errors.py's table decides every status, gunicorn's errors included.
        error = http_error(exc)
        if error.status >= 500 and error.status != 505:
            self.log.exception("Error handling request")
        else:
            self.log.warning("Invalid request from ip=%s: %s (%s)",
                             (addr or ("",))[0], error.code, exc)
        try:
            client.sendall(raw_response(error.to_response()))
        except OSError:
            self.log.debug("Failed to send error message.")
