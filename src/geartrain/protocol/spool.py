"""Large packet bodies kept in files instead of memory.

Gearman allows bodies up to 4 GiB. Holding them in RAM would make a server's memory
grow with the size of the jobs it passes on, so the decoder can hand the trailing
data of a large body to a :class:`SpoolWriter` as it arrives. The result is a
:class:`Spooled` payload: an open, already unlinked file in the spool directory plus
its length. Nothing is left on disk by a crash (the file has no name), and the file
disappears when the last reference to its payload goes away.

These are the only file operations of the protocol package; the decoder performs
them through the writer it is given and stays free of sockets and clocks.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Final

#: How much of a spooled payload is read into memory at a time.
CHUNK: Final = 256 * 1024


class Spooled:
    """A payload held in an unlinked file: its length and the means to read it back."""

    __slots__ = ("_digest", "fd", "size")

    #: Spooled payloads open in this process: while there are none (the common case), code
    #: that looks for them among many small payloads need not look.
    open_count = 0

    def __init__(self, fd: int, size: int) -> None:
        self.fd = fd
        self.size = size
        self._digest: bytes | None = None
        Spooled.open_count += 1

    def __len__(self) -> int:
        return self.size

    def __bool__(self) -> bool:
        return self.size > 0

    def __repr__(self) -> str:
        return f"<Spooled {self.size} bytes, fd {self.fd}>"

    def read(self, offset: int, count: int) -> bytes:
        """``count`` bytes from ``offset`` (fewer only at the end of the payload)."""
        return os.pread(self.fd, min(count, self.size - offset), offset)

    def chunks(self, size: int = CHUNK) -> Iterator[bytes]:
        """The whole payload, ``size`` bytes at a time."""
        for offset in range(0, self.size, size):
            yield self.read(offset, size)

    def digest(self) -> bytes:
        """A hash of the content, computed once: what coalesces ``-`` uniques of this size."""
        if self._digest is None:
            hasher = hashlib.blake2b(digest_size=32)
            for chunk in self.chunks(4 * CHUNK):
                hasher.update(chunk)
            self._digest = hasher.digest()
        return self._digest

    def to_bytes(self) -> bytes:
        """The whole payload in memory (for the few places that need it whole)."""
        return self.read(0, self.size)

    def close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            Spooled.open_count -= 1
            os.close(fd)

    def __del__(self) -> None:
        # The file has no name: closing its last descriptor frees its disk space.
        self.close()


class SpoolWriter:
    """Receives one payload into a new unlinked file of ``directory``.

    Raises OSError from :meth:`write` when the disk is full or the directory cannot
    be used; the caller then discards the payload with :meth:`abort`.
    """

    __slots__ = ("_fd", "_size")

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self._fd, name = tempfile.mkstemp(prefix="body-", dir=directory)
        os.unlink(name)
        self._size = 0

    def write(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
            self._size += written

    def finish(self) -> Spooled:
        fd, self._fd = self._fd, -1
        return Spooled(fd, self._size)

    def abort(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)


def spool_from(directory: Path, chunks: Iterator[bytes]) -> Spooled:
    """A spooled payload made of ``chunks`` (e.g. read back from a persistent queue)."""
    writer = SpoolWriter(directory)
    try:
        for chunk in chunks:
            writer.write(chunk)
    except BaseException:
        writer.abort()
        raise
    return writer.finish()
