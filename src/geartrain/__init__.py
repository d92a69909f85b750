"""geartrain: a Gearman job server, client and worker library, wire-compatible with gearmand."""

__version__ = "0.1.0"
