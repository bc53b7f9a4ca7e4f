"""`python -m bt_search` runs the command line (the console script's entry: launcher.py)."""

from bt_search.cli.launcher import main

main()
