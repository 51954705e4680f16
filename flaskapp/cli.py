"""`flask` commands: `flask --app wsgi emulator` runs the built-in upstream on its own."""
from __future__ import annotations

import click
from flask import Flask


@click.command("emulator", context_settings={"ignore_unknown_options": True, "help_option_names": []})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def emulator_command(args: tuple[str, ...]) -> None:
    """Serve the OpenAI-compatible emulator (options: `flask emulator --help`)."""
    from .emulator.server import main

    main(list(args))


def init_app(app: Flask) -> None:
    app.cli.add_command(emulator_command)
