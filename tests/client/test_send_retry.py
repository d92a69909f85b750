"""A job whose send fails goes to the next server, with the blocking and the asyncio client."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator

import pytest

from geartrain.client import AsyncClient, Client
from geartrain.client.servers import Address
from tests.support import ServerProcess

#: Larger than what loopback socket buffers hold, so the send cannot complete
#: into the kernel before the reset arrives, however the threads are scheduled.
PAYLOAD = b"x" * (24 * 1024 * 1024)


@pytest.fixture
def resetting_server() -> Iterator[Address]:
    """A server that accepts every connection and resets it at once."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.05)  # wakes accept() to notice the end of the test
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            # Linger 0: close() sends RST, so the client's send fails outright.
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[:2]
    finally:
        stop.set()
        thread.join(5)
        listener.close()


def test_sync_client_retries_a_failed_send_on_the_next_server(
    resetting_server: Address, geartrain_server: ServerProcess
) -> None:
    # No unique id: the first job starts at the first server in the list.
    with Client([resetting_server, geartrain_server.address], timeout=10) as client:
        task = client.submit("retried", PAYLOAD)
        assert task.wait_created(10).startswith(b"H:")
    assert task.server == geartrain_server.address


async def test_async_client_retries_a_failed_send_on_the_next_server(
    resetting_server: Address, geartrain_server: ServerProcess
) -> None:
    async with AsyncClient([resetting_server, geartrain_server.address], timeout=10) as client:
        task = await client.submit("retried", PAYLOAD)
        assert (await task.wait_created(10)).startswith(b"H:")
    assert task.server == geartrain_server.address
