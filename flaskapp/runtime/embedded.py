"""The embedded default: with no upstream configured, serve from the built-in emulator.

Called by gunicorn's master (gunicorn.conf.py) before it forks workers, so every
worker inherits the same `OPENAI_BASE_URL` and one emulator serves them all. Workers are
configured through `os.environ` on purpose: gunicorn gives the master's hooks no other
channel to the app the workers load, and the workers' `openai` client reads
OPENAI_BASE_URL and OPENAI_API_KEY from the environment, as it does when they are set
by hand. Only the standard library is imported here: the emulator runs in a process of
its own.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys

# The emulator accepts any key; the openai client insists on having one.
EMULATOR_API_KEY = "sk-emulator"
# Set in the environment the workers inherit when their upstream is this emulator: answers say so.
EMULATOR_MARKER = "FLASKAPP_EMBEDDED_EMULATOR"
# Where `python -m flaskapp.emulator` finds the package: the directory holding flaskapp/.
_PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def wanted(environ: dict | os._Environ = os.environ) -> bool:
    return not environ.get("OPENAI_API_KEY") and not environ.get("OPENAI_BASE_URL")


def start() -> tuple[subprocess.Popen, str]:
    """Start the emulator on a free loopback port; point this process's environment at it."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=4096)
    base_url = f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
    process = subprocess.Popen(
        [sys.executable, "-m", "flaskapp.emulator", "--fd", str(listener.fileno()), "--exit-with-parent"],
        pass_fds=[listener.fileno()], cwd=_PROJECT_ROOT)
    listener.close()
    os.environ["OPENAI_BASE_URL"] = base_url
    os.environ["OPENAI_API_KEY"] = EMULATOR_API_KEY
    os.environ[EMULATOR_MARKER] = "1"
    return process, base_url


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
