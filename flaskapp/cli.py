"""`flask` commands: `emulator` (the built-in upstream on its own), `loadtest` and `experiment`.

Each passes its arguments to the tool's own argparse `main()`, imported only when the
command runs: gunicorn workers build the app too, and need none of it.
"""
from __future__ import annotations

import sys

import click
from flask import Flask

_PASS_THROUGH = {"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []}


@click.command("emulator", context_settings=_PASS_THROUGH, add_help_option=False)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def emulator_command(args: tuple[str, ...]) -> None:
    """Serve the OpenAI-compatible emulator (see --help)."""
    from .emulator.server import main

    main(list(args), prog="flask emulator")


@click.command("loadtest", context_settings=_PASS_THROUGH, add_help_option=False)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def loadtest_command(args: tuple[str, ...]) -> None:
    """Load-test the blocking and streaming views (see --help)."""
    from .loadtest.cli import run_main

    sys.exit(run_main(list(args), prog="flask loadtest"))


@click.command("experiment", context_settings=_PASS_THROUGH, add_help_option=False)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def experiment_command(args: tuple[str, ...]) -> None:
    """Run the blocking-vs-streaming experiment and write a report (see --help)."""
    from .loadtest.cli import experiment_main

    sys.exit(experiment_main(list(args), prog="flask experiment"))


def init_app(app: Flask) -> None:
    for command in (emulator_command, loadtest_command, experiment_command):
        app.cli.add_command(command)
