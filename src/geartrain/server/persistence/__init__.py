"""geartrain server/persistence."""
