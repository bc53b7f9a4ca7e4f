"""`python -m bt_search` runs the command line (the console script's entry: launcher.py)."""

from .launcher import main

main()
