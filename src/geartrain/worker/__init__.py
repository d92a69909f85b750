"""geartrain worker."""
