"""What a worker function receives, and how its return value becomes a packet."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING

from geartrain.client.core import to_bytes
from geartrain.errors import WorkFail
from geartrain.protocol import PacketType

if TYPE_CHECKING:  # protocol imports this module for Job
    from .protocol import Assignment

P = PacketType

#: Sends one progress packet for the job: (type, extra args, data).
Emit = Callable[[PacketType, tuple[bytes, ...], bytes], None]

#: What a worker function may return: bytes, str (sent as UTF-8) or None (empty result).
Result = bytes | bytearray | memoryview | str | None


class Job:
    """One job being run by a worker function.

    Attributes:
        function: the function name, decoded as UTF-8.
        handle: the server's job handle.
        unique: the job's unique id (bytes; may be empty).
        payload: the job's data.
    """

    def __init__(self, assignment: Assignment, emit: Emit) -> None:
        self.assignment = assignment
        self.function = assignment.function.decode(errors="surrogateescape")
        self.handle = assignment.handle
        self.unique = assignment.unique
        self.payload = assignment.payload
        self._emit = emit

    def __repr__(self) -> str:
        return f"<Job {self.function!r} handle={self.handle!r} unique={self.unique!r}>"

    @property
    def text(self) -> str:
        """The payload decoded as UTF-8."""
        return self.payload.decode()

    def send_data(self, data: bytes | str) -> None:
        """Send a partial result (WORK_DATA) to waiting clients."""
        self._emit(P.WORK_DATA, (), to_bytes(data))

    def send_warning(self, data: bytes | str) -> None:
        """Send a warning (WORK_WARNING) to waiting clients."""
        self._emit(P.WORK_WARNING, (), to_bytes(data))

    def send_status(self, numerator: int, denominator: int) -> None:
        """Report progress (WORK_STATUS); the server keeps it for GET_STATUS."""
        self._emit(P.WORK_STATUS, (str(numerator).encode(), str(denominator).encode()), b"")


def outcome(
    result: object = None, error: BaseException | None = None, *, exceptions: bool = True
) -> tuple[PacketType, bytes]:
    """The final packet type and data for a function's return value or exception.

    Args:
        result: what the function returned.
        error: what it raised, if anything.
        exceptions: send WORK_EXCEPTION for unexpected exceptions; when False
            they become WORK_FAIL (for clients that cannot handle exceptions).
    """
    if error is None:
        if result is None:
            return P.WORK_COMPLETE, b""
        if isinstance(result, bytes | bytearray | memoryview | str):
            return P.WORK_COMPLETE, to_bytes(result)
        error = TypeError(f"a worker function must return bytes, str or None, not {result!r}")
    if isinstance(error, WorkFail) or not exceptions:
        return P.WORK_FAIL, b""
    return P.WORK_EXCEPTION, f"{type(error).__name__}: {error}".encode()


@dataclasses.dataclass(frozen=True, slots=True)
class Registration:
    """A registered function: the callable and its server-side timeout in milliseconds."""

    func: Callable[..., object]
    timeout_ms: int = 0


def timeout_ms(timeout: float | None) -> int:
    """Seconds (the API's unit) to CAN_DO_TIMEOUT milliseconds; None or 0 means none."""
    if not timeout:
        return 0
    if timeout < 0:
        raise ValueError("timeout must be positive")
    return max(1, round(timeout * 1000))
