"""geartrain server."""
