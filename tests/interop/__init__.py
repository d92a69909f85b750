"""Interop tests: real Gearman clients written by others, against gearmand and geartrain.

Each test runs once per server (the ``any_server`` fixture) or starts both and compares what
the client saw (``server_pair``). Clients: libgearman's ``gearman`` and ``gearadmin``, PHP's
pecl gearman, Perl's Gearman::Client/Worker, python ``gear``, and raw sockets for byte-exact
checks. A test whose client is missing skips with the package to install; with CI set it fails.
"""
