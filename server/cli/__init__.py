"""The command line (`python -m server` / `jobmon`): `commands.main`, and the alert listener it
runs with `listen` (`listener`)."""

from server.cli.commands import main

__all__ = ["main"]
