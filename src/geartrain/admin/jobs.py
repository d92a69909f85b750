"""Replies of the job lookup and dead-letter admin commands (``job``, ``dead ...``), parsed.

The server's formats are described in ``geartrain.server.admin_jobs``: records are
``key<TAB>value`` lines, with tabs, line ends and backslashes escaped inside values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

_UNESCAPES = {"\\\\": "\\", "\\t": "\t", "\\n": "\n", "\\r": "\r"}


def unescape(field: bytes) -> str:
    """One field as the server escaped it, back to its text."""
    text = field.decode("utf-8", errors="replace")
    if "\\" not in text:
        return text
    out = []
    i = 0
    while i < len(text):
        pair = text[i : i + 2]
        if pair in _UNESCAPES:
            out.append(_UNESCAPES[pair])
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _value(text: str) -> Any:
    """Numbers as numbers, anything else as text."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


_TEXT_KEYS = {"handle", "function", "unique", "state", "worker", "last", "progress"}


def parse_record(lines: list[bytes]) -> dict[str, Any]:
    """A ``job`` or ``dead show`` reply: its keys, and ``attempts_kept``, the list of
    ``attempt`` lines as ``{time, worker, outcome, text}``."""
    record: dict[str, Any] = {}
    attempts: list[dict[str, Any]] = []
    for line in lines:
        key, _, rest = line.partition(b"\t")
        name = key.decode(errors="replace")
        if name == "attempt":
            time, worker, outcome, message = (rest.split(b"\t") + [b""] * 4)[:4]
            attempts.append(
                {
                    "time": float(time),
                    "worker": unescape(worker),
                    "outcome": outcome.decode(),
                    "text": unescape(message),
                }
            )
        else:
            value = unescape(rest)
            record[name] = value if name in _TEXT_KEYS else _value(value)
    if attempts:
        record["attempts_kept"] = attempts
    return record


@dataclass(slots=True)
class DeadInfo:
    """One line of ``dead list``."""

    id: int
    handle: str
    function: str
    unique: str
    attempts: int
    died: int  # Unix seconds
    last_outcome: str


def parse_dead_list(lines: list[bytes]) -> list[DeadInfo]:
    """``dead list`` lines (``ID HANDLE FUNCTION UNIQUE ATTEMPTS DIED LAST`` by tabs)."""
    result = []
    for line in lines:
        dead_id, handle, function, unique, attempts, died, last = line.split(b"\t")
        result.append(
            DeadInfo(
                int(dead_id),
                unescape(handle),
                unescape(function),
                unescape(unique),
                int(attempts),
                int(died),
                last.decode(errors="replace"),
            )
        )
    return result
