"""One JSON object a line on the log stream, for log shippers: python-json-logger, made compact.

gunicorn.conf.py installs `JsonLines` for gunicorn's error log (stderr), which the
request log shares, so every line on the stream is one JSON object with its `time`
(UTC, ISO 8601, milliseconds), `level`, `logger` and `pid` (which worker) inside:

    {"time":"2026-01-05T10:00:00.123Z","level":"INFO","logger":"flaskapp.requests","pid":7,"event":"request",...}
    {"time":"2026-01-05T10:00:00.001Z","level":"INFO","logger":"gunicorn.error","pid":1,"message":"Booting worker with pid: 7"}

A record logged as a dict (the request log's) is its fields; any other keeps its text in
`message`. Made once per handler, never per line: the encoder is built once and the
time formatted without `strftime`.
"""
from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from typing import Any

from gunicorn import glogging
from pythonjsonlogger.json import JsonFormatter

FIELDS = ["asctime", "levelname", "name", "process", "message"]
RENAMED = {"asctime": "time", "levelname": "level", "name": "logger", "process": "pid"}

_ENCODER = json.JSONEncoder(separators=(",", ":"), default=str)


def compact(data: Any, **_: Any) -> str:
    """`json.dumps` as the formatter calls it, with one encoder for every line (no per-call setup)."""
    return _ENCODER.encode(data)


class JsonLines(JsonFormatter):
    def __init__(self, **options: Any) -> None:
        options.setdefault("fmt", FIELDS)
        options.setdefault("rename_fields", RENAMED)
        super().__init__(json_serializer=compact, json_default=str, **options)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        moment = datetime.fromtimestamp(record.created, timezone.utc)
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        if log_data.get("message") == "":  # a record logged as a dict of fields has no text
            del log_data["message"]
        return log_data


def logconfig(formatter: str = "flaskapp.ops.logformat.JsonLines") -> dict[str, Any]:
    """gunicorn's `logconfig_dict`: its error log (which the request log shares) and every other
    logger as JSON lines on stderr. No level is set here, so gunicorn's `--log-level` still applies;
    the access log is left to `GunicornLogger`."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": formatter}},
        "handlers": {
            "error_console": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"},
        },
        # Not propagated: the root's handler would write each line a second time.
        "loggers": {"gunicorn.error": {"handlers": ["error_console"], "propagate": False}},
        "root": {"level": "WARNING", "handlers": ["error_console"]},
    }


class GunicornLogger(glogging.Logger):
    """gunicorn's logger, with an access log only when one is asked for (`--access-logfile`).

    gunicorn turns its access log on whenever `logconfig_dict` is set, and would then build
    its fields on every request; here it stays off unless asked for, and when on, its lines
    are JSON too (the Apache-style line in `message`). Written against gunicorn 27.0.
    """

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        self._access_wanted = bool(cfg.accesslog)
        for handler in self.access_log.handlers:
            handler.setFormatter(JsonLines())

    @property
    def access_log_enabled(self) -> bool:
        return self._access_wanted
