"""The built-in OpenAI-compatible upstream: `python -m flaskapp.emulator --help`."""
from .app import Emulator, EmulatorSettings

__all__ = ["Emulator", "EmulatorSettings"]
