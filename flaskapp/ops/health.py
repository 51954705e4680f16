"""Probes: `/healthz` (the process answers) and `/readyz` (and so does the model server).

Point a liveness probe at /healthz: it never touches the upstream, so a slow model
server cannot get healthy workers restarted. Point a load balancer's readiness check
at /readyz: 200 only when the upstream has just listed its models. Each worker checks
at most once every `FLASKAPP_READY_CACHE_SECONDS`, so a busy prober never becomes
load on the model server. Neither needs a gateway key, is rate limited, or is logged.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass

import openai
from flask import Blueprint, Flask, Response, current_app, jsonify

from ..errors import UpstreamUnavailable, from_openai
from ..runtime.embedded import EMULATOR_MARKER
from ..web.handlers import error_response
from .policy import policy

bp = Blueprint("health", __name__)


@dataclass
class Readiness:
    """The last upstream check, reused for `cache_seconds`."""

    cache_seconds: float
    timeout: float
    checked_at: float = float("-inf")
    problem: str | None = "not checked yet"

    def check(self, client: openai.OpenAI) -> str | None:
        """None when the upstream answers, else what is wrong (safe to show)."""
        now = time.monotonic()
        if now - self.checked_at >= self.cache_seconds:
            self.checked_at = now  # before the call: concurrent probes share this one
            try:
                client.with_options(max_retries=0, timeout=self.timeout).models.list()
                self.problem = None
            except openai.OpenAIError as exc:
                self.problem = from_openai(exc).message  # never the upstream's own words
        return self.problem


@bp.route("/healthz")
@policy(key=False, limited=False, logged=False)  # see the module's docstring
def healthz() -> Response:
    return Response("ok\n", content_type="text/plain; charset=utf-8")


@bp.route("/health")
@policy(key=False, limited=False, logged=False)  # vLLM's liveness probe, which guidellm asks first
def health() -> Response:
    return Response(status=200)


@bp.route("/readyz")
@policy(key=False, limited=False, logged=False)
def readyz() -> Response:
    readiness: Readiness = current_app.extensions["readiness"]
    problem = readiness.check(current_app.extensions["upstream"].client)
    if problem is None:
        # Naming the built-in emulator: its answers are no model's (runtime/embedded.py).
        response = jsonify({"status": "ready", **({"upstream": "emulator"}
                                                  if os.environ.get(EMULATOR_MARKER) else {})})
    else:
        response = error_response(UpstreamUnavailable(f"Not ready: {problem}"))
    response.headers["Cache-Control"] = "no-store"
    return response


def init_app(app: Flask) -> None:
    app.extensions["readiness"] = Readiness(app.config["READY_CACHE_SECONDS"], app.config["READY_TIMEOUT"])
    app.register_blueprint(bp)
