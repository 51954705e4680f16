"""`GET /demo`: blocking and streaming side by side in the browser."""
from __future__ import annotations

from flask import Blueprint, render_template

bp = Blueprint("demo", __name__)


@bp.route("/demo")
def demo() -> str:
    return render_template("demo.html")
