"""isnet-wsgi: background removal with ISNet behind a plain WSGI app."""

__version__ = "0.1.0"
