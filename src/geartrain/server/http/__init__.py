"""The server's HTTP listener: health checks and the HTTP/JSON gateway.

Built on aiohttp's low-level server, sharing the job server's event loop. Only
imported when an HTTP port is configured, so aiohttp stays an optional extra
(``geartrain[http]``).

* :mod:`.site` starts and stops the listener (one aiohttp runner, a site per address).
* :mod:`.routes` is the one route table.
* :mod:`.health` answers ``/healthz`` and ``/readyz``.
* :mod:`.gateway` submits jobs, reports their status and cancels them (``/v1/...``), and
  accepts gearmand's ``-r http`` form (``POST /FUNCTION``).
* :mod:`.peer` is the gateway's in-process client: a Peer the scheduler sends to.
* :mod:`.openapi` describes all of it (``/openapi.json``).
"""
