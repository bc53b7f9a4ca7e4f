"""`python -m bt_search` runs the command line."""

from .cli import app

app(prog_name="bt-search")
