"""Who may call the POST endpoints: the API_KEY setting, or anyone when it is unset."""

from __future__ import annotations

import hmac

from .errors import Forbidden, Unauthorized
from .http import Request


def _same(given: str, expected: str) -> bool:
    # Constant-time compare: the answer's timing says nothing about the key.
    return hmac.compare_digest(given.strip().encode(), expected.encode())


def require_bearer(request: Request, api_key: str | None) -> None:
    """Our own endpoints: ``Authorization: Bearer <key>``, else 401."""
    if api_key is None:
        return
    scheme, _, token = (request.header("Authorization") or "").partition(" ")
    if not (scheme.lower() == "bearer" and _same(token, api_key)):
        raise Unauthorized("Send the API key as 'Authorization: Bearer <key>'.")


def require_api_key_header(request: Request, api_key: str | None) -> None:
    """remove.bg's endpoint: ``X-Api-Key: <key>``; a missing or wrong key is
    403, as remove.bg answers (its clients know no 401)."""
    if api_key is None:
        return
    given = request.header("X-Api-Key")
    if given is None:
        raise Forbidden("Send the API key in the X-Api-Key header.", code="auth_failed")
    if not _same(given, api_key):
        raise Forbidden("The API key in X-Api-Key is not valid.", code="auth_failed")
