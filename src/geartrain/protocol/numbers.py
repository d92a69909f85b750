"""Decimal numbers in packet arguments and admin lines, read the way gearmand reads them.

gearmand parses numeric fields with C's ``atoi``/``strtoll``: optional leading
blanks, an optional sign, then as many digits as there are; anything else reads as 0.
Clients rely on that leniency (e.g. a non-numeric epoch means "now").
"""

from __future__ import annotations


def parse_c_int(text: bytes) -> int:
    """The value C's ``strtoll`` gives ``text`` (0 when no digits lead)."""
    body = text.lstrip(b" \t")
    sign = 1
    if body[:1] in (b"-", b"+"):
        sign = -1 if body[:1] == b"-" else 1
        body = body[1:]
    end = 0
    while end < len(body) and 48 <= body[end] <= 57:
        end += 1
    return sign * int(body[:end]) if end else 0
