"""One route policy: whether a view needs a gateway key, counts against the rate limit, is logged.

Declared on the view function (`@policy(...)`, or `declare()` for views defined elsewhere),
never as lists of endpoint names: renaming a blueprint cannot open, unlimit or un-log a
route. `compile_table(app)` turns the declarations into one dict keyed by endpoint, read
once per request by the request log, auth and the rate limit.

A view that declares nothing gets `GUARDED` (key, limit and log: the safe side), and
tests/test_policy.py fails for it. Unknown paths (404) are guarded too; the rate limiter
never counts them (they have no endpoint), as before.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, TypeVar

from flask import Flask

View = TypeVar("View", bound=Callable)

ATTRIBUTE = "flaskapp_policy"


@dataclass(frozen=True)
class Policy:
    key: bool = True  # a gateway key is needed (when keys are on)
    limited: bool = True  # counts against the caller's rate limit (when limits are on)
    logged: bool = True  # one request-log line and metrics


GUARDED = Policy()
# Asked every few seconds by machines: a key they rarely hold, and lines that would drown the rest.
PROBE = Policy(key=False, limited=False, logged=False)


def declare(view: View, declared: Policy) -> View:
    setattr(view, ATTRIBUTE, declared)
    return view


def policy(key: bool = True, limited: bool = True, logged: bool = True) -> Callable[[View], View]:
    """Decorate a view (below its route decorator) with its policy."""
    declared = Policy(key, limited, logged)
    return lambda view: declare(view, declared)


def declared(view: Callable) -> Policy | None:
    return getattr(view, ATTRIBUTE, None)


def compile_table(app: Flask) -> dict[str | None, Policy]:
    """Every endpoint's policy, made once the app's views are all registered."""
    static = app.view_functions.get("static")
    if static is not None:
        declare(static, PROBE)  # Flask's own view: the demo's files, no secret
    table: dict[str | None, Policy] = {
        endpoint: declared(view) or GUARDED for endpoint, view in app.view_functions.items()}
    app.extensions["policy"] = table
    return table
