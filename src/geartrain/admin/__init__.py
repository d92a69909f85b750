"""geartrain admin."""
