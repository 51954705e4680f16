"""The service's install (requirements.txt) and the package's (pyproject.toml) agree.

requirements.txt is what `pip install -r requirements.txt && gunicorn -c gunicorn.conf.py
wsgi:app` needs and nothing more; pyproject.toml's `dependencies` pin the same, and the
tests, the load tester and the peers live in its extras.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

# Never part of the service, whatever the extras say.
NOT_THE_SERVICE = {"pytest", "hypothesis", "playwright", "fastapi", "uvicorn", "uvicorn-worker",
                   "locust", "matplotlib", "uvloop"}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(lines: list[str]) -> dict[str, str]:
    """name -> version of `name==version` lines; anything else is a mistake here."""
    found = {}
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([0-9][^\s;]*)", line)
        assert match, f"not an exact pin: {line!r}"
        found[canonical(match[1])] = match[2]
    return found


def requirements() -> dict[str, str]:
    return pins((ROOT / "requirements.txt").read_text().splitlines())


def extra(name: str) -> dict[str, str]:
    """An extra's own pins; `flaskapp[...]` self-references are expanded."""
    found: dict[str, str] = {}
    for spec in PROJECT["optional-dependencies"][name]:
        if spec.startswith("flaskapp["):
            for other in spec[len("flaskapp["):-1].split(","):
                found |= extra(other.strip())
        else:
            found |= pins([spec])
    return found


def test_requirements_and_pyproject_pin_the_same_service():
    assert requirements() == pins(PROJECT["dependencies"])


def test_requirements_carry_no_test_load_or_peer_package():
    others = extra("test") | extra("loadtest") | extra("peers")
    assert not set(requirements()) & (set(others) | NOT_THE_SERVICE)


def test_the_test_extra_holds_the_runner_the_load_tester_and_the_peers():
    test = extra("test")
    assert {"pytest", "hypothesis", "playwright", "locust", "fastapi", "redis"} <= set(test)
    assert all(test[name] == version for name, version in extra("loadtest").items())


def test_python_version():
    assert PROJECT["requires-python"] == ">=3.11"
