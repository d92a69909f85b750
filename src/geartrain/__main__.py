"""``python -m geartrain`` runs the command line."""

from geartrain.cli.main import main

main()
