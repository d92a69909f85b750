"""geartrain client."""
