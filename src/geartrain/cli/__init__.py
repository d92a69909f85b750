"""The ``geartrain`` command line."""
