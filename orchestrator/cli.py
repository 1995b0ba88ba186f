"""The `orchestrate` console script's address (pyproject `[project.scripts]`), kept so that
installed copies go on working; the command line itself is `orchestrator.commands`."""

from orchestrator.commands import main

__all__ = ["main"]
