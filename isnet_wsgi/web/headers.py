"""Header parameters: 'type/sub; key=value; ...' as clients really send them.

Plain values may be tokens or quoted strings; extended values (RFC 2231 and
RFC 5987, ``filename*=UTF-8''na%C3%AFve.png``) carry a charset and percent-
encoded bytes, and may be split into numbered continuations
(``filename*0*=UTF-8''a%20; filename*1="b.png"``). Nothing here raises on junk.
"""

from __future__ import annotations

import codecs
import re
from urllib.parse import unquote_to_bytes

# "; key" optionally followed by "= value", the value being a quoted string
# (possibly unterminated: junk must not raise) or anything up to the next ";".
_PARAM_RE = re.compile(r';\s*([^\s;=]+)\s*(?:=\s*("(?:\\.|[^"\\])*"?|[^;]*))?')
# NOTE: only \" and \\ are unescaped. Browsers do not escape backslashes in
# filenames (a Windows path arrives as "C:\Users\x.png"); unescaping every
# quoted-pair would silently eat them.
_QUOTED_PAIR_RE = re.compile(r'\\([\\"])')
# "name*3" or "name*3*": one numbered piece of an RFC 2231 continuation.
_CONTINUATION_RE = re.compile(r"([^*]+)\*([0-9]{1,3})(\*?)")
# RFC 5987 allows these two; ASCII is a subset of both.
_EXTENDED_CHARSETS = {"utf-8", "iso8859-1", "ascii"}


def parse_options_header(value: str | None) -> tuple[str, dict[str, str]]:
    """Split 'type/sub; key=value; ...' into the lower-cased type and its params.

    Keys are lower-cased and quoted values unquoted. An extended value
    (``key*=`` or the continuations ``key*0*=``, ``key*1=``...) that decodes
    wins over the plain ``key=``; one that does not decode gives way to the
    plain value, and without one is kept with its undecodable bytes replaced
    (U+FFFD), so a parameter sent in any form is never lost. The first
    occurrence of a key wins.
    """
    if not value:
        return "", {}
    mimetype, semicolon, rest = value.partition(";")
    plain: dict[str, str] = {}
    pieces: dict[str, dict[int, tuple[str, bool]]] = {}  # key -> {index: (raw, extended)}
    decoded: dict[str, str] = {}  # extended values that decoded: they win
    replaced: dict[str, str] = {}  # extended values that did not: the last resort
    for match in _PARAM_RE.finditer(semicolon + rest):
        key, raw = match.group(1).lower(), (match.group(2) or "").strip()
        # PERF: most keys have no "*", and then no regex is run for them.
        continuation = "*" in key and _CONTINUATION_RE.fullmatch(key)
        if continuation:
            name, index, star = continuation.groups()
            pieces.setdefault(name, {}).setdefault(int(index), (raw, star == "*"))
        elif key.endswith("*"):
            _decode_into(key[:-1], [(raw, True)], decoded, replaced)
        else:
            plain.setdefault(key, _unquote(raw))
    for name, numbered in pieces.items():
        _decode_into(name, _in_order(numbered), decoded, replaced)
    return mimetype.strip().lower(), {**replaced, **plain, **decoded}


def _unquote(raw: str) -> str:
    if not raw.startswith('"'):
        return raw
    inner = raw[1:-1] if len(raw) > 1 and raw.endswith('"') else raw[1:]
    return _QUOTED_PAIR_RE.sub(r"\1", inner)


def _in_order(numbered: dict[int, tuple[str, bool]]) -> list[tuple[str, bool]]:
    """The pieces 0, 1, 2... up to the first one missing (RFC 2231: no gaps)."""
    ordered = []
    while len(ordered) in numbered:
        ordered.append(numbered[len(ordered)])
    return ordered


def _decode_into(key: str, pieces: list[tuple[str, bool]], decoded: dict[str, str],
                 replaced: dict[str, str]) -> None:
    """Decode one extended value from its (raw, is_extended) pieces into a tier.

    The first extended piece names the charset ("charset'language'bytes");
    later extended pieces are percent-encoded bytes in that charset (one
    character may straddle two), plain pieces literal text.
    """
    charset: str | None = "utf-8"  # RFC 2231 says US-ASCII when unnamed; a superset
    data = bytearray()
    for position, (raw, extended) in enumerate(pieces):
        text = _unquote(raw)
        if extended and position == 0:
            charset, text = _split_charset(text)
        # NOTE: surrogatepass, so a str with lone surrogates cannot raise here;
        # their bytes are not valid in any charset and fall to the replaced tier.
        raw_bytes = text.encode("utf-8", "surrogatepass")
        data += unquote_to_bytes(raw_bytes) if extended else raw_bytes
    try:
        if charset is None or codecs.lookup(charset).name not in _EXTENDED_CHARSETS:
            raise LookupError(charset)
        decoded.setdefault(key, data.decode(charset))
    except (LookupError, ValueError):  # ValueError: a NUL or surrogate in the name, bad bytes
        replaced.setdefault(key, data.decode("utf-8", errors="replace"))


def _split_charset(text: str) -> tuple[str | None, str]:
    """"charset'language'bytes" -> (charset, bytes); charset None when malformed."""
    charset, quote, rest = text.partition("'")
    _language, quote_again, encoded = rest.partition("'")
    if not (quote and quote_again):
        return None, text
    return charset, encoded
