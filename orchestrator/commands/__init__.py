"""The command line, and the only place Typer is used: one module per command group.

`app.py` registers every command; `shared.py` declares the options they share; `exits.py`
is the one seam where errors become exit codes. Command modules stay thin: they load
settings, call a library function and print what it returns.
"""

from .app import app, main

__all__ = ["app", "main"]
