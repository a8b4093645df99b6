"""gunicorn's sync worker, with a bounded share for each client and JSON errors.

Still one sync worker (``worker_class`` in gunicorn.conf.py names this one):
it serves one connection at a time, and adds three things to gunicorn's own.

- Time limits on the connection (client_limits.py): a client that sends or
  reads slowly gets a 408 or is dropped, and the next client is served.
- Errors gunicorn answers itself, before the app sees a request (malformed
  framing, a request line or headers over its limits, an odd ``Expect``, an
  HTTP version it does not speak), are the API's JSON, not gunicorn's HTML.
- A HTTP/1.1 request without exactly one ``Host`` is refused (RFC 9112 3.2).
"""

from __future__ import annotations

from gunicorn.workers.sync import SyncWorker

from ..web.errors import MissingHost, http_error
from ..web.response import Response
from .client_limits import ClientLimits, ClientTooSlowToRead, PacedSocket

# Read size while throwing away what a client still sends after the answer.
_LINGER_CHUNK_BYTES = 64 * 1024


class BoundedSyncWorker(SyncWorker):
    """gunicorn's SyncWorker with client time limits and JSON error answers."""

    def load_wsgi(self):
        super().load_wsgi()
        # The app's settings (loaded once in the master) say the limits.
        self.client_limits = ClientLimits.from_settings(self.wsgi.settings)

    def handle(self, listener, client, addr):
        super().handle(listener, PacedSocket(client, self.client_limits), addr)

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
        _linger(req, client)

    def handle_error(self, req, client, addr, exc):
        # web/errors.py's table decides every status, gunicorn's errors included.
        error = http_error(exc)
        if error.status >= 500 and error.status != 505:
            self.log.exception("Error handling request")
        else:
            self.log.warning("Invalid request from ip=%s: %s (%s)",
                             (addr or ("",))[0], error.code, exc)
        try:
            client.sendall(_raw_response(error.to_response()))
        except OSError:
            self.log.debug("Failed to send error message.")


def _linger(req, client: PacedSocket) -> None:
    """Read and throw away the rest of a body the app did not read.

    NOTE: an early answer (413 for a declared size, 401, 404) leaves the body
    unread; closing then makes the kernel reset the connection, and a client
    still sending never reads the answer. nginx's lingering_close, bounded.
    """
    if client.timed_out:
        return  # a slow client is dropped, not waited for
    client.start_linger()
    try:
        while req.body.read(_LINGER_CHUNK_BYTES):
            pass
    except Exception:  # a timeout, a broken chunk, a vanished client: stop lingering
        pass


def _raw_response(response: Response) -> bytes:
    """A complete HTTP/1.1 response on the wire, for answers sent outside the app."""
    lines = [f"HTTP/1.1 {response.status_line}",
             *(f"{name}: {value}" for name, value in response.wsgi_headers()),
             "Connection: close", "", ""]
    return "\r\n".join(lines).encode("latin-1") + response.body

