"""A geartrain server inside an asyncio application, with a worker and a client.

Run it with ``python examples/embedded.py``: it starts a server on a free loopback port,
runs a worker that reverses strings, submits one job, prints the result and stops.
The application keeps its own signal handling (Ctrl-C still interrupts it as usual).
"""

from __future__ import annotations

import asyncio

import geartrain
from geartrain.client import AsyncClient
from geartrain.worker import AsyncWorker, Job


async def reverse(job: Job) -> bytes:
    return job.payload[::-1]


async def main() -> bytes:
    # Port 0: any free port; queue "none": background jobs live in memory only.
    settings = geartrain.Settings(listen=["127.0.0.1"], port=0, queue="none")
    server = geartrain.Server(settings)
    serving = asyncio.create_task(server.serve(install_signal_handlers=False))
    await server.wait_started()  # listening now; raises StartupError if it could not
    address = f"127.0.0.1:{server.port}"

    worker = AsyncWorker([address])
    worker.register("reverse", reverse)
    working = asyncio.create_task(worker.work(handle_signals=False))
    try:
        async with AsyncClient([address], timeout=10) as client:
            result = await client.call("reverse", "hello, world")
    finally:
        worker.stop()
        await working
        server.request_stop()  # request_stop(graceful=True) lets running jobs finish
        await serving
    return result


if __name__ == "__main__":
    print(asyncio.run(main()).decode())
