"""Prometheus metrics of a running server, built when they are scraped.

The server keeps plain counters on the objects its hot path already holds (see
``geartrain.server.counters``); nothing here runs until the HTTP listener's
``/metrics`` route calls :func:`exposition`. prometheus_client is imported only then,
so a server without an HTTP port runs without it (it comes with ``geartrain[http]``).

Two sets of names:

* gearman-exporter's (github.com/bakins/gearman-exporter): ``gearman_up``,
  ``gearman_version_info``, ``gearman_jobs``, ``gearman_jobs_running``,
  ``gearman_jobs_waiting`` and ``gearman_workers``, with its help texts and labels, so
  that dashboards built on it (Grafana 11423) work unchanged. Their values are those of
  the admin ``status`` and ``version`` commands.
* geartrain's own, prefixed ``geartrain_``, which no admin command shows: job outcomes,
  wait and run times, connections, traffic, errors and the persistent queue.
  ``docs/operations.md`` says what each one means.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from geartrain.server.app import Server

__all__ = ["exposition"]

_INSTALL_HINT = "/metrics needs prometheus_client: pip install 'geartrain[http]'"


def exposition(server: Server) -> tuple[bytes, str]:
    """The server's metrics in the Prometheus text format, read from it now.

    Args:
        server: the running server whose counters and state are read.

    Returns:
        The body and its Content-Type, as an HTTP ``/metrics`` route sends them.

    Raises:
        ImportError: prometheus_client is not installed (the message says how to).
    """
    try:
        from ._exposition import render
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] != "prometheus_client":
            raise
        raise ImportError(_INSTALL_HINT) from exc
    return render(server)
